//! `hello`: prints a greeting, its arguments and the GREETING environment variable, exits 0.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".to_string());
    println!("{greeting} from skiff!");
    println!("argv: {args:?}");
    for (i, a) in args.iter().enumerate().skip(1) {
        println!("arg[{i}] = {a}");
    }
}
