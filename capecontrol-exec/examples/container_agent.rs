//! The demo agent as a container binary. The agent (`support/demo_agent.rs`) is written with
//! the macros, like any native agent; one call to `serve_stdio` turns it into a program that
//! speaks the container protocol on stdin/stdout.
//!
//! `scripts/build-test-images.sh` builds it statically and packs it into the `FROM scratch`
//! image `capecontrol/test-agent:dev`.

#[path = "support/demo_agent.rs"]
mod demo_agent;

fn main() -> std::process::ExitCode {
    capecontrol_core::protocol::serve_stdio(demo_agent::DemoAgent)
}
