use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "1.0.0", triggers(schedules("0 25 * * *")))]
struct T;

fn main() {}
