fn main() {
    std::process::exit(mtcd::cli::main());
}
