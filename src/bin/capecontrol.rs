//! The `capecontrol` command-line tool. Not built yet: the foundation issue fills it in.

fn main() {
    eprintln!("capecontrol: not built yet");
    std::process::exit(2);
}
