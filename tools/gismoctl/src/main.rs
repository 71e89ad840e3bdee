fn main() {
    eprintln!("gismoctl: not yet implemented");
    std::process::exit(2);
}
