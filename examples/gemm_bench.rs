//! Times mtsum's packed f32 kernels against candle's matmul on the linear layers of an
//! opus-mt-sized Marian (d_model 512, ffn 2048, vocab 62,518), in the same run:
//!
//!     cargo run --release --example gemm_bench -- [THREADS]
//!
//! For each shape it prints milliseconds per product and GFLOP/s for both, and their ratio.

use std::time::Instant;

use candle_core::{Device, Module, Tensor};
use mtsum::models::gemm::{Kernel, PackedMatrix};

/// Best of a few timed runs, in seconds.
fn best_of(mut f: impl FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> candle_core::Result<()> {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    mtsum::models::set_threads(threads).map_err(candle_core::Error::msg)?;
    let Some(kernel) = Kernel::detect() else {
        println!("no AVX2/AVX-512 on this CPU: mtsum uses candle's matmul here");
        return Ok(());
    };
    println!("kernel {kernel:?}, {threads} threads");
    println!("| rows | out x in | mtsum ms | GFLOP/s | candle ms | GFLOP/s | ratio |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let dev = Device::Cpu;
    for (outputs, inputs) in [(62518, 512), (1536, 512), (2048, 512), (512, 2048)] {
        let weight = Tensor::randn(0f32, 1.0, (outputs, inputs), &dev)?;
        let packed = PackedMatrix::pack(&weight.flatten_all()?.to_vec1()?, outputs, inputs, kernel);
        let plain = candle_nn::Linear::new(weight, None);
        for rows in [16, 64, 256] {
            let x = Tensor::randn(0f32, 1.0, (rows, inputs), &dev)?;
            let values = x.flatten_all()?.to_vec1::<f32>()?;
            let ours = best_of(|| drop(packed.matmul_t(&values, rows, None)));
            let theirs = best_of(|| drop(plain.forward(&x).expect("candle matmul")));
            let gflop = 2.0 * (rows * outputs * inputs) as f64 / 1e9;
            println!(
                "| {rows} | {outputs} x {inputs} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2}x |",
                ours * 1e3,
                gflop / ours,
                theirs * 1e3,
                gflop / theirs,
                theirs / ours
            );
        }
    }
    Ok(())
}
