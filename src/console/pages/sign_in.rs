//! Sign-in: the key form, the session cookie, sign-out.

use super::*;

pub(crate) async fn home(v: Viewer) -> Response {
    v.to("/marketplace")
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignIn {
    chrome: Chrome,
    error: String,
}

fn sign_in_page(base: &str, status: StatusCode, error: &str) -> Response {
    let csrf = token();
    let page = SignIn {
        chrome: Chrome {
            base: base.to_owned(),
            csrf: csrf.clone(),
            ..Chrome::default()
        },
        error: error.to_owned(),
    };
    (
        status,
        [(
            SET_COOKIE,
            set_cookie(SIGN_IN_COOKIE, &csrf, base, Some(3600)),
        )],
        render(&page),
    )
        .into_response()
}

pub(crate) async fn sign_in_form(Base(base): Base) -> Response {
    sign_in_page(&base, StatusCode::OK, "")
}

pub(crate) async fn sign_in(
    State(state): State<Console>,
    Base(base): Base,
    Client(ip, user_agent): Client,
    headers: HeaderMap,
    form: Form,
) -> Response {
    let audit = |reason: String| NewAuditEvent {
        event_type: "auth.denied".into(),
        payload: json!({"reason": reason, "method": "POST", "path": form.path}),
        ip_address: ip,
        user_agent: user_agent.clone(),
        ..NewAuditEvent::default()
    };
    let sent = forms::value(&form.fields, CSRF_FIELD).unwrap_or_default();
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if !same_token(sent, expected) {
        let _ = state
            .api
            .platform
            .store()
            .append_audit(audit("CSRF token missing or wrong".into()))
            .await;
        return sign_in_page(
            &base,
            StatusCode::FORBIDDEN,
            "The form's CSRF token is missing or wrong: try again.",
        );
    }
    let key = forms::value(&form.fields, "key").unwrap_or_default().trim();
    let identified = if key.is_empty() {
        Err(AuthError::Missing)
    } else {
        state.api.keys.identify(key).await
    };
    match identified {
        Ok(_) => {
            let (session, _csrf) = state.sessions.create(hash_key(key));
            let mut response = see_other(&format!("{base}/marketplace"));
            let h = response.headers_mut();
            for c in [
                set_cookie(SESSION_COOKIE, &session, &base, None),
                set_cookie(SIGN_IN_COOKIE, "", &base, Some(0)),
            ] {
                if let Ok(c) = c.parse() {
                    h.append(SET_COOKIE, c);
                }
            }
            response
        }
        Err(AuthError::Unavailable(e)) => error_page(StatusCode::SERVICE_UNAVAILABLE, &e, None),
        Err(e) => {
            let reason = match &e {
                AuthError::Missing => "no API key".to_owned(),
                other => other.to_string(),
            };
            if let Err(e) = state.api.platform.store().append_audit(audit(reason)).await {
                tracing::warn!(error = %e, "could not audit a failed sign-in");
            }
            sign_in_page(
                &base,
                StatusCode::UNAUTHORIZED,
                "That API key is unknown or revoked.",
            )
        }
    }
}

pub(crate) async fn sign_out(State(state): State<Console>, v: Viewer, form: Form) -> Response {
    if let Err(r) = v.check_csrf(&state, &form).await {
        return r;
    }
    state.sessions.remove(&v.token);
    let mut response = v.to("/sign-in");
    if let Ok(c) = set_cookie(SESSION_COOKIE, "", &v.base, Some(0)).parse() {
        response.headers_mut().append(SET_COOKIE, c);
    }
    response
}
