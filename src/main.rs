fn main() {
    std::process::exit(ferrotron::cli::main());
}
