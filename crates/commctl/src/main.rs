//! `commctl`: the Commissaire operator CLI. See `commctl --help`.

fn main() -> std::process::ExitCode {
    commctl::main_entry()
}
