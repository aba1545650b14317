//! Compile-time behaviour of the macros: what compiles (`ui/pass`) and the one clear error
//! each mistake gets (`ui/fail`, with the expected `.stderr`). Regenerate the expectations
//! with `TRYBUILD=overwrite cargo test -p capecontrol-macros --test ui` and read them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
