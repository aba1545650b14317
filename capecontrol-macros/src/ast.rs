//! The shapes the macros understand: an agent type with its metadata, and the task and tool
//! methods of an `#[agent_impl]` block. Building them checks the shape of the user's code
//! (an async method, `&self`, one input, a `Result`) and reports each mistake once, at its
//! span; the values in the attributes are checked afterwards, on the whole tree, by
//! [`crate::check`].

use std::collections::BTreeSet;

use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, ImplItem, ImplItemFn, ItemImpl, Pat, PathArguments, ReturnType, Type,
};

use crate::attr::{AgentAttrs, Errors, Kind, MethodAttrs, doc_text};

/// `#[derive(Agent)]`'s input.
pub(crate) struct Agent {
    pub(crate) attrs: AgentAttrs,
    pub(crate) description: Option<String>,
}

impl Agent {
    pub(crate) fn from_input(input: &syn::DeriveInput, errors: &mut Errors) -> Self {
        let attrs = AgentAttrs::parse(&input.attrs, errors);
        if attrs.name.is_none() && !input.attrs.iter().any(|a| a.path().is_ident("agent")) {
            errors.at(
                &input.ident,
                "missing `#[agent(name = \"...\", version = \"...\")]` on the agent type",
            );
        } else {
            if attrs.name.is_none() {
                errors.at(&input.ident, "missing `name = \"...\"` in `#[agent(...)]`");
            }
            if attrs.version.is_none() {
                errors.at(
                    &input.ident,
                    "missing `version = \"...\"` (SemVer, like \"1.0.0\") in `#[agent(...)]`",
                );
            }
        }
        let description = attrs
            .description
            .as_ref()
            .map(|d| d.value())
            .or_else(|| doc_text(&input.attrs));
        if description.is_none() {
            errors.at(
                &input.ident,
                "missing description: add a `///` doc comment to the agent type or `description = \"...\"` in `#[agent(...)]`",
            );
        }
        Agent { attrs, description }
    }
}

/// One `#[task]` or `#[tool]` method.
pub(crate) struct Method {
    pub(crate) kind: Kind,
    pub(crate) ident: syn::Ident,
    /// The name in the manifest (the method's name unless `name = "..."`).
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    /// The arguments of its `#[task(...)]` / `#[tool(...)]`, as written.
    pub(crate) attrs: MethodAttrs,
    pub(crate) input: Type,
    pub(crate) output: Type,
    /// `E` of `Result<O, E>`; `None` for a one-argument `Result<O>` alias.
    pub(crate) error: Option<Type>,
    /// The return type as written, to point at when `E` is not named.
    pub(crate) ret: Type,
}

/// An `#[agent_impl]` block: the impl (attributes of tasks and tools removed) and its methods.
pub(crate) struct AgentImpl {
    pub(crate) item: ItemImpl,
    pub(crate) methods: Vec<Method>,
}

fn is_marker(attr: &syn::Attribute) -> Option<Kind> {
    let last = attr.path().segments.last()?;
    match last.ident.to_string().as_str() {
        "task" => Some(Kind::Task),
        "tool" => Some(Kind::Tool),
        _ => None,
    }
}

impl AgentImpl {
    pub(crate) fn from_item(mut item: ItemImpl, errors: &mut Errors) -> Self {
        if let Some((_, path, _)) = &item.trait_ {
            errors.at(
                path,
                "`#[agent_impl]` goes on an inherent impl block (`impl MyAgent { ... }`), not on a trait impl",
            );
        }
        let mut methods = Vec::new();
        let mut names = BTreeSet::new();
        let mut idents = BTreeSet::new();
        let mut keep = Vec::with_capacity(item.items.len());
        for impl_item in std::mem::take(&mut item.items) {
            let ImplItem::Fn(mut f) = impl_item else {
                keep.push(impl_item);
                continue;
            };
            let duplicate_ident = !idents.insert(f.sig.ident.to_string());
            let mut kind: Option<(Kind, syn::Attribute)> = None;
            let mut other = Vec::new();
            for attr in std::mem::take(&mut f.attrs) {
                match is_marker(&attr) {
                    Some(k) => {
                        if let Some((first, _)) = &kind {
                            errors.at(
                                &attr,
                                format!(
                                    "a method is one task or one tool: this method is already marked `#[{}]`",
                                    first.as_str()
                                ),
                            );
                        } else {
                            kind = Some((k, attr));
                        }
                    }
                    None => other.push(attr),
                }
            }
            f.attrs = other;
            if let Some((kind, attr)) = kind {
                let method_attrs = MethodAttrs::parse(&attr, kind, errors);
                if let Some(m) = method(&f, kind, method_attrs, errors) {
                    if names.insert((kind == Kind::Tool, m.name.clone())) {
                        methods.push(m);
                    } else {
                        errors.at(
                            &f.sig.ident,
                            format!("duplicate {} name `{}`", kind.as_str(), m.name),
                        );
                        if duplicate_ident {
                            // Reported here; dropping the copy spares the user rustc's
                            // "duplicate definitions" for the same mistake.
                            continue;
                        }
                    }
                }
            }
            keep.push(ImplItem::Fn(f));
        }
        item.items = keep;
        AgentImpl { item, methods }
    }
}

/// Checks a task or tool method's shape:
/// `async fn name(&self, cx: &TaskContext | &ToolContext, input: T) -> Result<O, E>`.
fn method(f: &ImplItemFn, kind: Kind, attrs: MethodAttrs, errors: &mut Errors) -> Option<Method> {
    let sig = &f.sig;
    let k = kind.as_str();
    let ctx = kind.context();
    let shape = format!(
        "`async fn {}(&self, cx: &{ctx}, input: T) -> Result<O, E>`",
        sig.ident
    );
    let mut ok = true;
    if sig.asyncness.is_none() {
        errors.at(
            sig.fn_token,
            format!("a #[{k}] method must be `async`: {shape}"),
        );
        ok = false;
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.at(
            &sig.generics,
            format!("a #[{k}] method must not be generic: its input and output types make its JSON schemas"),
        );
        ok = false;
    }
    let paren = sig.paren_token.span.join();
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        Some(FnArg::Receiver(r)) => {
            let found = match (&r.reference, &r.mutability, &r.colon_token) {
                (_, _, Some(_)) => "a typed `self`",
                (Some(_), Some(_), _) => "`&mut self`",
                _ => "`self` by value",
            };
            errors.at(r, format!("a #[{k}] method takes `&self`, not {found}"));
            ok = false;
        }
        _ => {
            errors.at_span(
                paren,
                format!("a #[{k}] method must take `&self` first: {shape}"),
            );
            return None;
        }
    }
    let typed: Vec<&syn::PatType> = inputs
        .filter_map(|a| match a {
            FnArg::Typed(t) => Some(t),
            FnArg::Receiver(_) => None,
        })
        .collect();
    match typed.len() {
        0 => {
            errors.at_span(
                paren,
                format!("a #[{k}] method needs a context and one input: {shape}"),
            );
            return None;
        }
        1 => {
            errors.at_span(
                paren,
                format!("a #[{k}] method needs one input after the context: {shape}"),
            );
            return None;
        }
        2 => {}
        _ => {
            let extra = &typed[2..];
            errors.at(
                quote::quote!(#(#extra),*),
                format!("a #[{k}] method takes exactly one input; put these values together in one struct"),
            );
            return None;
        }
    }
    let (cx, input) = (typed[0], typed[1]);
    match &*cx.ty {
        Type::Reference(r) if r.mutability.is_none() => {
            if let Type::Path(p) = &*r.elem {
                let last = p.path.segments.last().map(|s| s.ident.to_string());
                let wrong = match kind {
                    Kind::Task => "ToolContext",
                    Kind::Tool => "TaskContext",
                };
                if last.as_deref() == Some(wrong) {
                    errors.at(
                        &cx.ty,
                        format!("a #[{k}] method receives `&{ctx}`, not `&{wrong}`"),
                    );
                    ok = false;
                }
            }
        }
        _ => {
            errors.at(
                &cx.ty,
                format!("the context parameter of a #[{k}] method must be `&{ctx}`"),
            );
            ok = false;
        }
    }
    if !matches!(&*cx.pat, Pat::Ident(_) | Pat::Wild(_)) {
        errors.at(&cx.pat, "the context parameter must be a plain name");
        ok = false;
    }
    let Some((ret, output, error)) = result_type(&sig.output) else {
        let span = match &sig.output {
            ReturnType::Default => paren,
            ReturnType::Type(_, ty) => ty.span(),
        };
        errors.at_span(
            span,
            format!("a #[{k}] method must return `Result<O, E>`: {shape}"),
        );
        return None;
    };
    let name = match &attrs.name {
        Some(lit) => lit.value(),
        None => {
            let s = sig.ident.to_string();
            s.strip_prefix("r#").unwrap_or(&s).to_owned()
        }
    };
    let description = attrs
        .description
        .as_ref()
        .map(|d| d.value())
        .or_else(|| doc_text(&f.attrs));
    ok.then(|| Method {
        kind,
        ident: sig.ident.clone(),
        name,
        description,
        attrs,
        input: (*input.ty).clone(),
        output,
        error,
        ret,
    })
}

/// `Result<O, E>` or `Result<O>` (any path ending in `Result`) -> (the type, O, E).
fn result_type(ret: &ReturnType) -> Option<(Type, Type, Option<Type>)> {
    let ReturnType::Type(_, ty) = ret else {
        return None;
    };
    let Type::Path(p) = &**ty else {
        return None;
    };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    let output = types.next()?;
    let error = types.next();
    if types.next().is_some() {
        return None;
    }
    Some(((**ty).clone(), output, error))
}
