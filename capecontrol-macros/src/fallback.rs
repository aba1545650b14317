//! What the macros emit after an error: the compile error, the user's item unchanged and
//! placeholder impls of the traits, so that the one error is not followed by a cascade of
//! others about impls the macros could not write.

use proc_macro2::{Span, TokenStream};
use quote::quote;

/// `#[derive(Agent)]` after an error: the error and an `AgentMetadata` impl that is never run.
pub(crate) fn metadata(e: &syn::Error, input: &syn::DeriveInput, p: &TokenStream) -> TokenStream {
    let e = e.to_compile_error();
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #e
        #[automatically_derived]
        impl #impl_generics #p::__private::AgentMetadata for #ident #ty_generics #where_clause {
            fn metadata() -> #p::__private::Manifest {
                #p::__private::unreachable_after_compile_error()
            }
        }
    }
}

/// `#[agent_impl]` after an error: the error, the impl block (task and tool markers removed)
/// and an `AgentBase` impl that is never run.
pub(crate) fn agent_base(e: &syn::Error, item: &syn::ItemImpl, p: &TokenStream) -> TokenStream {
    let e = e.to_compile_error();
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let value = quote!(#p::__private::serde_json::Value);
    let result = quote!(#p::__private::Result<#value>);
    let task_cx = quote!(#p::__private::TaskContext);
    let tool_cx = quote!(#p::__private::ToolContext);
    quote! {
        #e
        #item
        #[automatically_derived]
        #[#p::__private::async_trait]
        impl #impl_generics #p::__private::AgentBase for #self_ty #where_clause {
            fn manifest(&self) -> #p::__private::Manifest {
                #p::__private::unreachable_after_compile_error()
            }
            async fn run_task(&self, _: &str, _: #value, _: &#task_cx) -> #result {
                #p::__private::unreachable_after_compile_error()
            }
            async fn call_tool(&self, _: &str, _: #value, _: &#tool_cx) -> #result {
                #p::__private::unreachable_after_compile_error()
            }
        }
    }
}

/// `#[task]` or `#[tool]` outside an `#[agent_impl]` block: the error and the item unchanged.
pub(crate) fn misplaced(what: &str, item: &TokenStream) -> TokenStream {
    let e = syn::Error::new(
        Span::call_site(),
        format!("`#[{what}]` marks a method of an impl block that has `#[agent_impl]` on it"),
    )
    .to_compile_error();
    quote!(#e #item)
}
