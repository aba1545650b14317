//! Parsing of the macros' attributes: `#[agent(...)]` on the struct, `#[task(...)]` /
//! `#[tool(...)]` on methods, `#[agent_impl(...)]` on the impl block. This stage only reads
//! the attributes into literals (the first stage, like thiserror's `attr`): an unknown or
//! repeated key is an error here, a bad value is reported by the validation pass
//! ([`crate::check`]). Parsing goes on after a mistake so that several are reported at once.

use std::collections::BTreeSet;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::punctuated::Punctuated;
use syn::{Attribute, LitInt, LitStr, Token};

/// Collects errors; combines them into one `syn::Error` at the end.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    pub(crate) fn at<T: ToTokens>(&mut self, tokens: T, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }
    pub(crate) fn at_span(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }
    pub(crate) fn check<T: ToTokens, V>(&mut self, tokens: T, r: Result<V, String>) -> Option<V> {
        match r {
            Ok(v) => Some(v),
            Err(m) => {
                self.at(tokens, m);
                None
            }
        }
    }
    pub(crate) fn into_result(self) -> syn::Result<()> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Tracks the keys seen in an attribute, to reject a repeated one.
#[derive(Default)]
struct Seen(BTreeSet<String>);

impl Seen {
    /// The key of `meta`, or an error if it was seen before.
    fn key(&mut self, meta: &ParseNestedMeta<'_>, errors: &mut Errors) -> Option<String> {
        let key = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_else(|| meta.path.to_token_stream().to_string().replace(' ', ""));
        if self.0.insert(key.clone()) {
            Some(key)
        } else {
            errors.at(&meta.path, format!("duplicate key `{key}`"));
            None
        }
    }
}

fn unknown(meta: &ParseNestedMeta<'_>, key: &str, where_: &str, keys: &[&str]) -> syn::Error {
    meta.error(format!(
        "unknown key `{key}` in {where_}; expected one of: {}",
        keys.join(", ")
    ))
}

/// Skips the rest of an unknown or repeated key (`= value` or `(...)`), so parsing goes on.
fn skip(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: Token![=] = meta.input.parse()?;
        let _: syn::Expr = meta.input.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        let _: TokenStream = content.parse()?;
    }
    Ok(())
}

fn lit_str(meta: &ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    meta.value()?.parse()
}

/// An integer literal that fits a `u64` (its range is checked by the validation pass).
fn lit_int(meta: &ParseNestedMeta<'_>) -> syn::Result<LitInt> {
    let lit: LitInt = meta.value()?.parse()?;
    lit.base10_parse::<u64>()?;
    Ok(lit)
}

/// The value of an integer literal [`lit_int`] accepted, if it fits a `u32`.
pub(crate) fn int_value(lit: Option<&LitInt>) -> Option<u32> {
    lit.and_then(|l| l.base10_parse::<u32>().ok())
}

/// `key("a", "b")`.
fn lit_list(meta: &ParseNestedMeta<'_>) -> syn::Result<Vec<LitStr>> {
    let content;
    syn::parenthesized!(content in meta.input);
    let list = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
    Ok(list.into_iter().collect())
}

/// `crate = "path"` or `crate = path`: where the facade crate is, when the macros cannot find
/// it in `Cargo.toml`.
fn crate_path(meta: &ParseNestedMeta<'_>) -> syn::Result<syn::Path> {
    let value = meta.value()?;
    if value.peek(LitStr) {
        let lit: LitStr = value.parse()?;
        lit.parse::<syn::Path>()
            .map_err(|_| syn::Error::new(lit.span(), "expected a path, like `::capecontrol`"))
    } else {
        value.parse()
    }
}

/// The `#[agent(...)]` attributes of a struct.
#[derive(Default)]
pub(crate) struct AgentAttrs {
    pub(crate) crate_path: Option<syn::Path>,
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<LitStr>,
    pub(crate) description: Option<LitStr>,
    pub(crate) category: Option<LitStr>,
    pub(crate) placement: Option<LitStr>,
    pub(crate) scopes: Vec<LitStr>,
    pub(crate) roles: Vec<LitStr>,
    pub(crate) data_access: Vec<LitStr>,
    pub(crate) timeout: Option<LitInt>,
    pub(crate) retries: Option<LitInt>,
    pub(crate) memory_limit: Option<LitStr>,
    pub(crate) cpu_limit: Option<LitStr>,
    pub(crate) concurrent_tasks: Option<LitInt>,
    pub(crate) ask_timeout: Option<LitInt>,
    pub(crate) events: Vec<LitStr>,
    pub(crate) schedules: Vec<LitStr>,
    pub(crate) webhooks: Vec<LitStr>,
    pub(crate) triggers: bool,
    pub(crate) icon: Option<LitStr>,
    pub(crate) color: Option<LitStr>,
    pub(crate) description_short: Option<LitStr>,
    pub(crate) settings: Option<syn::Type>,
    pub(crate) ui: bool,
    pub(crate) image: Option<LitStr>,
    pub(crate) command: Vec<LitStr>,
}

const AGENT_KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "category",
    "placement",
    "scopes",
    "roles",
    "data_access",
    "timeout",
    "retries",
    "memory_limit",
    "cpu_limit",
    "concurrent_tasks",
    "ask_timeout",
    "triggers",
    "ui",
    "container",
    "crate",
];
const TRIGGER_KEYS: &[&str] = &["events", "schedules", "webhooks"];
const UI_KEYS: &[&str] = &["icon", "color", "description_short", "settings"];
const CONTAINER_KEYS: &[&str] = &["image", "command"];

impl AgentAttrs {
    /// Parses every `#[agent(...)]` in `attrs` (several attributes act as one: a key may
    /// appear once across all of them).
    pub(crate) fn parse(attrs: &[Attribute], errors: &mut Errors) -> Self {
        let mut out = Self::default();
        let mut seen = Seen::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("agent")) {
            let r = attr.parse_nested_meta(|meta| out.parse_key(&meta, &mut seen, errors));
            if let Err(e) = r {
                errors.push(e);
            }
        }
        out
    }

    fn parse_key(
        &mut self,
        meta: &ParseNestedMeta<'_>,
        seen: &mut Seen,
        errors: &mut Errors,
    ) -> syn::Result<()> {
        let Some(key) = seen.key(meta, errors) else {
            return skip(meta);
        };
        match key.as_str() {
            "crate" => self.crate_path = Some(crate_path(meta)?),
            "name" => self.name = Some(lit_str(meta)?),
            "version" => self.version = Some(lit_str(meta)?),
            "description" => self.description = Some(lit_str(meta)?),
            "category" => self.category = Some(lit_str(meta)?),
            "placement" => self.placement = Some(lit_str(meta)?),
            "scopes" => self.scopes = lit_list(meta)?,
            "roles" => self.roles = lit_list(meta)?,
            "data_access" => self.data_access = lit_list(meta)?,
            "timeout" => self.timeout = Some(lit_int(meta)?),
            "retries" => self.retries = Some(lit_int(meta)?),
            "concurrent_tasks" => self.concurrent_tasks = Some(lit_int(meta)?),
            "ask_timeout" => self.ask_timeout = Some(lit_int(meta)?),
            "memory_limit" => self.memory_limit = Some(lit_str(meta)?),
            "cpu_limit" => self.cpu_limit = Some(lit_str(meta)?),
            "triggers" => {
                self.triggers = true;
                let mut inner = Seen::default();
                meta.parse_nested_meta(|meta| {
                    let Some(key) = inner.key(&meta, errors) else {
                        return skip(&meta);
                    };
                    let list = match key.as_str() {
                        "events" => &mut self.events,
                        "schedules" => &mut self.schedules,
                        "webhooks" => &mut self.webhooks,
                        _ => return Err(unknown(&meta, &key, "`triggers(...)`", TRIGGER_KEYS)),
                    };
                    *list = lit_list(&meta)?;
                    Ok(())
                })?;
            }
            "ui" => {
                self.ui = true;
                let mut inner = Seen::default();
                meta.parse_nested_meta(|meta| {
                    let Some(key) = inner.key(&meta, errors) else {
                        return skip(&meta);
                    };
                    match key.as_str() {
                        "settings" => {
                            self.settings = Some(meta.value()?.parse()?);
                            return Ok(());
                        }
                        "icon" | "color" | "description_short" => {}
                        _ => return Err(unknown(&meta, &key, "`ui(...)`", UI_KEYS)),
                    }
                    let lit = lit_str(&meta)?;
                    match key.as_str() {
                        "icon" => self.icon = Some(lit),
                        "color" => self.color = Some(lit),
                        _ => self.description_short = Some(lit),
                    }
                    Ok(())
                })?;
            }
            "container" => {
                let mut inner = Seen::default();
                let span = meta.path.clone();
                meta.parse_nested_meta(|meta| {
                    let Some(key) = inner.key(&meta, errors) else {
                        return skip(&meta);
                    };
                    match key.as_str() {
                        "image" => self.image = Some(lit_str(&meta)?),
                        "command" => self.command = lit_list(&meta)?,
                        _ => return Err(unknown(&meta, &key, "`container(...)`", CONTAINER_KEYS)),
                    }
                    Ok(())
                })?;
                if self.image.is_none() {
                    errors.at(span, "`container(...)` needs `image = \"...\"`");
                }
            }
            _ => return Err(unknown(meta, &key, "#[agent(...)]", AGENT_KEYS)),
        }
        Ok(())
    }
}

/// Whether a method is a task or a tool.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Task,
    Tool,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Tool => "tool",
        }
    }
    pub(crate) fn context(self) -> &'static str {
        match self {
            Kind::Task => "TaskContext",
            Kind::Tool => "ToolContext",
        }
    }
}

/// The arguments of `#[task(...)]` or `#[tool(...)]`.
#[derive(Default)]
pub(crate) struct MethodAttrs {
    pub(crate) name: Option<LitStr>,
    pub(crate) description: Option<LitStr>,
    pub(crate) timeout: Option<LitInt>,
    pub(crate) scope: Option<LitStr>,
}

impl MethodAttrs {
    pub(crate) fn parse(attr: &Attribute, kind: Kind, errors: &mut Errors) -> Self {
        let mut out = Self::default();
        if matches!(attr.meta, syn::Meta::Path(_)) {
            return out;
        }
        let mut seen = Seen::default();
        let keys: &[&str] = match kind {
            Kind::Task => &["name", "description", "timeout"],
            Kind::Tool => &["name", "description", "scope"],
        };
        let where_ = match kind {
            Kind::Task => "#[task(...)]",
            Kind::Tool => "#[tool(...)]",
        };
        let r = attr.parse_nested_meta(|meta| {
            let Some(key) = seen.key(&meta, errors) else {
                return skip(&meta);
            };
            match (key.as_str(), kind) {
                ("name", _) => out.name = Some(lit_str(&meta)?),
                ("description", _) => out.description = Some(lit_str(&meta)?),
                ("timeout", Kind::Task) => out.timeout = Some(lit_int(&meta)?),
                ("scope", Kind::Tool) => out.scope = Some(lit_str(&meta)?),
                _ => return Err(unknown(&meta, &key, where_, keys)),
            }
            Ok(())
        });
        if let Err(e) = r {
            errors.push(e);
        }
        out
    }
}

/// The arguments of `#[agent_impl(...)]`: only `crate = "path"`.
pub(crate) fn impl_args(args: TokenStream, errors: &mut Errors) -> Option<syn::Path> {
    let mut path = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            if path.is_some() {
                return Err(meta.error("duplicate key `crate`"));
            }
            path = Some(crate_path(&meta)?);
            Ok(())
        } else {
            let key = meta.path.to_token_stream().to_string();
            Err(unknown(&meta, &key, "#[agent_impl(...)]", &["crate"]))
        }
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        errors.push(e);
    }
    path
}

/// The text of the `///` doc comments in `attrs`: lines joined with spaces, paragraphs with a
/// blank line; `None` when there is none.
pub(crate) fn doc_text(attrs: &[Attribute]) -> Option<String> {
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current = String::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        let syn::Meta::NameValue(nv) = &attr.meta else {
            continue;
        };
        let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) = &nv.value
        else {
            continue;
        };
        let text = s.value();
        // An empty `///` line is an empty string: a paragraph break.
        for line in text.lines().chain(text.trim().is_empty().then_some("")) {
            let line = line.trim();
            if line.is_empty() {
                if !current.is_empty() {
                    paragraphs.push(std::mem::take(&mut current));
                }
            } else {
                if !current.is_empty() {
                    current.push(' ');
                }
                current.push_str(line);
            }
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    (!paragraphs.is_empty()).then(|| paragraphs.join("\n\n"))
}

/// Finds the facade crate as the user's `Cargo.toml` names it: `capecontrol` (possibly renamed),
/// else `capecontrol-core`, else `::capecontrol`.
pub(crate) fn facade_path() -> TokenStream {
    use proc_macro_crate::{FoundCrate, crate_name};
    for (package, own) in [
        ("capecontrol", "capecontrol"),
        ("capecontrol-core", "capecontrol_core"),
    ] {
        match crate_name(package) {
            // The facade's own examples and tests: the package is found as itself, and both the
            // library (`extern crate self as capecontrol`) and its other targets reach it so.
            Ok(FoundCrate::Itself) => {
                let ident = syn::Ident::new(own, Span::call_site());
                return quote::quote!(::#ident);
            }
            Ok(FoundCrate::Name(name)) => {
                let ident = syn::Ident::new(&name, Span::call_site());
                return quote::quote!(::#ident);
            }
            Err(_) => {}
        }
    }
    quote::quote!(::capecontrol)
}
