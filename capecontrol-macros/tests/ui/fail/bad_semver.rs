use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "1.2")]
struct T;

fn main() {}
