//! How fast the pi kernel runs on one core: `cargo run --release -p bramble-frameworks --example kernel_speed [TERMS]`.

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000_000);
    let t = std::time::Instant::now();
    let s = bramble_frameworks::pi::kernel::leibniz_range(0, n);
    let dt = t.elapsed().as_secs_f64();
    println!(
        "{} terms in {dt:.3}s = {:.3e} terms/s, pi ~ {}",
        n,
        n as f64 / dt,
        4.0 * s.value()
    );
}
