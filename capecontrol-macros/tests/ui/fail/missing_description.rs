use capecontrol::prelude::*;

#[derive(Agent)]
#[agent(name = "T", version = "1.0.0")]
struct T;

fn main() {}
