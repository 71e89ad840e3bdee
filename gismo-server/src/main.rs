fn main() {
    eprintln!("gismo-server: not yet implemented");
    std::process::exit(2);
}
