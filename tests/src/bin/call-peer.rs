//! Another binary: reads a `RemoteFn<u64, u64>` (postcard) from stdin and
//! tries to call it. Prints `refused: <error>` and exits 3 when the call is
//! refused, `called: <value>` otherwise.

use std::io::Read;

use mproc_call::RemoteFn;

fn main() {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        println!("unreadable: {e}");
        std::process::exit(2);
    }
    let f: RemoteFn<u64, u64> = match postcard::from_bytes(&bytes) {
        Ok(f) => f,
        Err(e) => {
            println!("undecodable: {e}");
            std::process::exit(2);
        }
    };
    match f.call(5) {
        Ok(v) => println!("called: {v}"),
        Err(e) => {
            println!("refused: {e}");
            std::process::exit(3);
        }
    }
}
