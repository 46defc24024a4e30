fn main() {
    println!("sidfs");
}
