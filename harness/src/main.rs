fn main() {
    std::process::exit(hsm_harness::cli::main());
}
