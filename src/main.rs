fn main() {
    println!("ringlb");
}
