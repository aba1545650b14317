//! Code generation. Everything generated reaches CapeControl through `<facade>::__private`
//! (absolute paths), and the impls carry `#[automatically_derived]` and lint allowances so
//! that they raise no warnings in the user's crate.
//!
//! How the two macros combine: `#[derive(Agent)]` implements `AgentMetadata` (the manifest
//! without tasks and tools); `#[agent_impl]` implements `AgentBase` for the same type on top of
//! it, adding the `tools` list, the task and tool declarations with their schemas, and the
//! dispatch of `run_task` / `call_tool` by name.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, LitStr, Pat};

use crate::ast::{Agent, AgentImpl, Method};
use crate::attr::{Errors, Kind, facade_path, impl_args, int_value};
use crate::{check, fallback, valid};

/// `config.timeout` when the agent does not set it (the manifest's default).
const DEFAULT_TIMEOUT: u32 = 30;

/// The enum variant a validated `category` or `placement` literal names.
fn variant(lit: Option<&LitStr>, table: &[(&str, &'static str)]) -> Option<&'static str> {
    valid::one_of("", &lit?.value(), table).ok()
}

fn opt_str(s: Option<&LitStr>) -> TokenStream {
    match s {
        Some(s) => quote!(::core::option::Option::Some(#s)),
        None => quote!(::core::option::Option::None),
    }
}

fn opt_string(s: Option<&str>) -> TokenStream {
    match s {
        Some(s) => quote!(::core::option::Option::Some(#s)),
        None => quote!(::core::option::Option::None),
    }
}

fn opt_u32(n: Option<u32>) -> TokenStream {
    match n {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    }
}

/// `#[derive(Agent)]`.
pub(crate) fn derive(input: &syn::DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let agent = Agent::from_input(input, &mut errors);
    check::agent(&agent, &mut errors);
    let p = agent
        .attrs
        .crate_path
        .as_ref()
        .map(ToTokens::to_token_stream)
        .unwrap_or_else(facade_path);
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let body = match errors.into_result() {
        Err(e) => return fallback::metadata(&e, input, &p),
        Ok(()) => metadata_body(&agent, &p),
    };
    let scopes = &agent.attrs.scopes;
    let timeout = int_value(agent.attrs.timeout.as_ref()).unwrap_or(DEFAULT_TIMEOUT);
    quote! {
        #[automatically_derived]
        #[allow(clippy::all, clippy::pedantic)]
        impl #impl_generics #p::__private::AgentMetadata for #ident #ty_generics #where_clause {
            const DECLARED_SCOPES: ::core::option::Option<&'static [&'static str]> =
                ::core::option::Option::Some(&[#(#scopes),*]);
            const DECLARED_TIMEOUT: ::core::option::Option<u32> =
                ::core::option::Option::Some(#timeout);
            fn metadata() -> #p::__private::Manifest {
                #body
            }
        }
    }
}

fn metadata_body(agent: &Agent, p: &TokenStream) -> TokenStream {
    let a = &agent.attrs;
    let name = &a.name;
    let version = &a.version;
    let description = agent.description.as_deref().unwrap_or_default();
    let mut sets = Vec::new();
    if let Some(c) = variant(a.category.as_ref(), &valid::CATEGORIES) {
        let v = format_ident!("{}", c);
        sets.push(
            quote!(__m.category = ::core::option::Option::Some(#p::__private::Category::#v);),
        );
    }
    if let Some(pl) = variant(a.placement.as_ref(), &valid::PLACEMENTS) {
        let v = format_ident!("{}", pl);
        sets.push(
            quote!(__m.placement = ::core::option::Option::Some(#p::__private::Placement::#v);),
        );
    }
    if a.timeout.is_some()
        || a.retries.is_some()
        || a.memory_limit.is_some()
        || a.cpu_limit.is_some()
        || a.concurrent_tasks.is_some()
        || a.ask_timeout.is_some()
    {
        let (t, r, c) = (
            opt_u32(int_value(a.timeout.as_ref())),
            opt_u32(int_value(a.retries.as_ref())),
            opt_u32(int_value(a.concurrent_tasks.as_ref())),
        );
        let (m, cpu) = (
            opt_str(a.memory_limit.as_ref()),
            opt_str(a.cpu_limit.as_ref()),
        );
        let ask = opt_u32(int_value(a.ask_timeout.as_ref()));
        sets.push(quote!(
            __m.config = ::core::option::Option::Some(
                #p::__private::config(#t, #r, #m, #cpu, #c, #ask)
            );
        ));
    }
    if !a.scopes.is_empty() || !a.roles.is_empty() || !a.data_access.is_empty() {
        let (s, r, d) = (&a.scopes, &a.roles, &a.data_access);
        sets.push(quote!(
            __m.permissions = ::core::option::Option::Some(
                #p::__private::permissions(&[#(#s),*], &[#(#r),*], &[#(#d),*]));
        ));
    }
    if a.triggers {
        let (e, s, w) = (&a.events, &a.schedules, &a.webhooks);
        sets.push(quote!(
            __m.triggers = ::core::option::Option::Some(
                #p::__private::triggers(&[#(#e),*], &[#(#s),*], &[#(#w),*]));
        ));
    }
    if a.ui {
        let (i, c, d) = (
            opt_str(a.icon.as_ref()),
            opt_str(a.color.as_ref()),
            opt_str(a.description_short.as_ref()),
        );
        let settings = match &a.settings {
            Some(ty) => quote_spanned!(ty.span()=>
                ::core::option::Option::Some(#p::__private::schema_of::<#ty>())),
            None => quote!(::core::option::Option::None),
        };
        sets.push(quote!(
            __m.ui = ::core::option::Option::Some(#p::__private::ui(#i, #c, #d, #settings));
        ));
    }
    if let Some(image) = &a.image {
        let cmd = &a.command;
        sets.push(quote!(
            __m.runtime = ::core::option::Option::Some(#p::__private::container(#image, &[#(#cmd),*]));
        ));
    }
    quote! {
        let mut __m = #p::__private::manifest(#name, #version, #description);
        #(#sets)*
        __m
    }
}

/// `#[agent_impl]` on an impl block.
pub(crate) fn agent_impl(args: TokenStream, input: &TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let path = impl_args(args, &mut errors);
    let item: syn::ItemImpl = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(e) => {
            let e = syn::Error::new(
                e.span(),
                "`#[agent_impl]` goes on an impl block: `impl MyAgent { ... }`",
            )
            .to_compile_error();
            return quote!(#e #input);
        }
    };
    let p = path
        .map(|p| p.to_token_stream())
        .unwrap_or_else(facade_path);
    let mut agent = AgentImpl::from_item(item, &mut errors);
    let value = quote!(#p::__private::serde_json::Value);
    let result = quote!(#p::__private::Result<#value>);
    let task_cx = quote!(#p::__private::TaskContext);
    let tool_cx = quote!(#p::__private::ToolContext);

    check::agent_impl(&agent, &mut errors);
    if let Err(e) = errors.into_result() {
        return fallback::agent_base(&e, &agent.item, &p);
    }

    rewrite_tools(&mut agent, &p);
    let agent = agent;
    let self_ty = &agent.item.self_ty;
    let (impl_generics, _, where_clause) = agent.item.generics.split_for_impl();

    let tasks: Vec<&Method> = agent
        .methods
        .iter()
        .filter(|m| m.kind == Kind::Task)
        .collect();
    let tools: Vec<&Method> = agent
        .methods
        .iter()
        .filter(|m| m.kind == Kind::Tool)
        .collect();
    let tool_names = tools.iter().map(|m| &m.name);
    let task_decls = tasks.iter().map(|m| {
        let (name, desc, timeout) = (
            &m.name,
            opt_string(m.description.as_deref()),
            opt_u32(int_value(m.attrs.timeout.as_ref())),
        );
        let (i, o) = schemas(m, &p);
        quote!(#p::__private::task_decl(#name, #desc, #timeout, #i, #o))
    });
    let tool_decls = tools.iter().map(|m| {
        let (name, desc, scope) = (
            &m.name,
            opt_string(m.description.as_deref()),
            opt_str(m.attrs.scope.as_ref()),
        );
        let (i, o) = schemas(m, &p);
        quote!(#p::__private::tool_decl(#name, #desc, #scope, #i, #o))
    });
    let task_arms = tasks.iter().map(|m| arm(m, &p));
    let tool_arms = tools.iter().map(|m| arm(m, &p));
    let metadata = quote_spanned!(self_ty.span()=>
        <Self as #p::__private::AgentMetadata>::metadata());
    let scope_checks = scope_checks(&agent, &p);
    let item = &agent.item;
    quote! {
        #item
        #scope_checks

        #[automatically_derived]
        #[allow(clippy::all, clippy::pedantic)]
        #[#p::__private::async_trait]
        impl #impl_generics #p::__private::AgentBase for #self_ty #where_clause {
            fn manifest(&self) -> #p::__private::Manifest {
                let mut __manifest = #metadata;
                __manifest.tools = #p::__private::strings(&[#(#tool_names),*]);
                __manifest.tasks = ::std::vec![#(#task_decls),*];
                __manifest.tool_specs = ::std::vec![#(#tool_decls),*];
                __manifest
            }

            async fn run_task(&self, __name: &str, __input: #value, __cx: &#task_cx) -> #result {
                match __name {
                    #(#task_arms)*
                    _ => #p::__private::Err(#p::__private::not_found("task", __name)),
                }
            }

            async fn call_tool(&self, __name: &str, __input: #value, __cx: &#tool_cx) -> #result {
                match __name {
                    #(#tool_arms)*
                    _ => #p::__private::Err(#p::__private::not_found("tool", __name)),
                }
            }
        }
    }
}

/// For a non-generic agent type, compile-time checks that each tool's scope is covered by the
/// scopes `#[derive(Agent)]` declared (`AgentMetadata::DECLARED_SCOPES`) and that each task's
/// timeout fits the agent's (`DECLARED_TIMEOUT`); an error points at the tool's scope or the
/// task's timeout. A generic type cannot be named in a free `const`, so it is not checked.
fn scope_checks(agent: &AgentImpl, p: &TokenStream) -> TokenStream {
    if !agent.item.generics.params.is_empty() {
        return TokenStream::new();
    }
    let self_ty = &agent.item.self_ty;
    let timeouts = agent.methods.iter().filter_map(|m| {
        let lit = m.attrs.timeout.as_ref()?;
        let timeout = int_value(Some(lit))?;
        let message = format!(
            "the timeout of task `{}` ({timeout} s) exceeds the agent's timeout: raise #[agent(timeout = ..)] (default {DEFAULT_TIMEOUT})",
            m.name
        );
        Some(quote_spanned! {lit.span()=>
            const _: () = ::core::assert!(
                #p::__private::timeout_fits(
                    <#self_ty as #p::__private::AgentMetadata>::DECLARED_TIMEOUT,
                    #timeout,
                ),
                #message
            );
        })
    });
    let checks = agent.methods.iter().filter_map(|m| {
        let scope = m.attrs.scope.as_ref()?;
        let message = format!(
            "the scope `{}` of tool `{}` is not among the agent's scopes: add it to #[agent(scopes(...))]",
            scope.value(),
            m.name
        );
        Some(quote_spanned! {scope.span()=>
            const _: () = ::core::assert!(
                #p::__private::scope_declared(
                    <#self_ty as #p::__private::AgentMetadata>::DECLARED_SCOPES,
                    #scope,
                ),
                #message
            );
        })
    });
    quote!(#(#checks)* #(#timeouts)*)
}

/// The input and output schema expressions, spanned at the user's types so that a missing
/// `JsonSchema` impl is reported there.
fn schemas(m: &Method, p: &TokenStream) -> (TokenStream, TokenStream) {
    let (i, o) = (&m.input, &m.output);
    (
        quote_spanned!(i.span()=> #p::__private::schema_of::<#i>()),
        quote_spanned!(o.span()=> #p::__private::schema_of::<#o>()),
    )
}

/// One `match` arm of `run_task` / `call_tool`: decode, call, convert the error, encode.
fn arm(m: &Method, p: &TokenStream) -> TokenStream {
    let (name, ident, kind) = (&m.name, &m.ident, m.kind.as_str());
    let (i, o) = (&m.input, &m.output);
    let decode = quote_spanned!(i.span()=>
        #p::__private::decode_input::<#i>(#kind, #name, __input)?);
    let encode = quote_spanned!(o.span()=>
        #p::__private::encode_output::<#o>(#kind, #name, &__output));
    let call = match m.kind {
        // Tool methods already return CapeControl's error (see `rewrite_tools`).
        Kind::Tool => quote!(Self::#ident(self, __cx, __in).await?),
        Kind::Task => {
            let convert = match &m.error {
                Some(e) => quote_spanned!(e.span()=> #p::__private::into_error::<#e>(__e)),
                None => {
                    let r = &m.ret;
                    quote_spanned!(r.span()=> #p::__private::into_error(__e))
                }
            };
            quote! {
                match Self::#ident(self, __cx, __in).await {
                    #p::__private::Ok(__v) => __v,
                    #p::__private::Err(__e) => return #p::__private::Err(#convert),
                }
            }
        }
    };
    quote! {
        #name => {
            let __in = #decode;
            let __output = #call;
            #encode
        }
    }
}

/// Wraps each tool method so that it checks its scope first: the body runs after
/// `ToolContext::authorize(cx, name, scope)` succeeds, and the method returns CapeControl's
/// `Result<O>` (the body's own error is converted with `Into`), because the check may fail with
/// a permission error. So a tool called directly from a task is scope-checked and audited like
/// one called by name.
fn rewrite_tools(agent: &mut AgentImpl, p: &TokenStream) {
    for item in &mut agent.item.items {
        let ImplItem::Fn(f) = item else { continue };
        let Some(m) = agent
            .methods
            .iter()
            .find(|m| m.kind == Kind::Tool && m.ident == f.sig.ident)
        else {
            continue;
        };
        let Some(FnArg::Typed(cx)) = f.sig.inputs.iter_mut().nth(1) else {
            continue;
        };
        // The context as the user named it. A `_` pattern, or a `_cx` the body does not use,
        // gets a name of ours (so that using it raises no lint about `_` bindings).
        let mut rebind = TokenStream::new();
        let cx_ident = match &*cx.pat {
            Pat::Ident(p) if !p.ident.to_string().starts_with('_') => p.ident.clone(),
            pat => {
                let ident = syn::Ident::new("__capecontrol_cx", Span::mixed_site());
                if let Pat::Ident(p) = pat
                    && mentions(f.block.to_token_stream(), &p.ident)
                {
                    let user = &p.ident;
                    rebind = quote!(let #user = #ident;);
                }
                *cx.pat = Pat::Ident(syn::PatIdent {
                    attrs: Vec::new(),
                    by_ref: None,
                    mutability: None,
                    ident: ident.clone(),
                    subpat: None,
                });
                ident
            }
        };
        let (name, scope) = (&m.name, opt_str(m.attrs.scope.as_ref()));
        let (o, ret) = (&m.output, &m.ret);
        let convert = match &m.error {
            Some(e) => quote_spanned!(e.span()=> #p::__private::into_error::<#e>),
            None => quote_spanned!(ret.span()=> #p::__private::into_error),
        };
        let block = &f.block;
        let result = syn::Ident::new("__capecontrol_result", Span::mixed_site());
        f.sig.output = syn::parse_quote!(-> #p::__private::Result<#o>);
        let span = syn::Ident::new("__capecontrol_span", Span::mixed_site());
        f.block = syn::parse_quote!({
            let #span = #p::__private::ToolContext::tool_span(#cx_ident, #name);
            #p::__private::Instrument::instrument(async move {
                #p::__private::ToolContext::authorize(#cx_ident, #name, #scope).await?;
                #rebind
                let #result: #ret = async move #block.await;
                #result.map_err(#convert)
            }, #span).await
        });
    }
}

/// Whether `tokens` contain the identifier `ident`.
fn mentions(tokens: TokenStream, ident: &syn::Ident) -> bool {
    tokens.into_iter().any(|t| match t {
        proc_macro2::TokenTree::Ident(i) => i == *ident,
        proc_macro2::TokenTree::Group(g) => mentions(g.stream(), ident),
        _ => false,
    })
}
