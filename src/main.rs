mod sys;
fn main() {}
