//! The gcr-oci binary: runc's command line over gcr's runtime (see the gcr-oci library).

#![deny(unsafe_code)]

fn main() {
    // Exit without unwinding through the runtime's forks; the status is the command's.
    std::process::exit(gcr_oci::main_with_args(std::env::args().collect()));
}
