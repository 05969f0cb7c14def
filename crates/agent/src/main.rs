//! Placeholder binary until the agent lands.
fn main() {}
