//! Times mtsum's int8 kernels against its packed f32 kernels on the linear layers of an
//! opus-mt-sized Marian (d_model 512, ffn 2048, vocab 62,518), in the same run, and how long
//! quantizing such a model's linear layers takes at load:
//!
//!     cargo run --release --example int8_bench -- [THREADS]
//!
//! For each shape it prints milliseconds per product for both (input quantization included
//! for int8) and their ratio.

use std::time::Instant;

use mtsum::models::gemm::{Kernel, PackedMatrix};
use mtsum::models::qgemm::{QKernel, QuantizedMatrix};

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

/// Deterministic values in [-0.5, 0.5).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    mtsum::models::set_threads(threads)?;
    let qkernel = QKernel::detect();
    println!("int8 kernel {qkernel:?}, {threads} threads");

    // opus-mt-ru-en's linear layers: 6 encoder layers (fused qkv, out, ffn up, ffn down),
    // 6 decoder layers (the same plus cross-attention q, fused kv, out), the output layer.
    let mut shapes = vec![(62518, 512)];
    for _ in 0..6 {
        shapes.extend([(1536, 512), (512, 512), (2048, 512), (512, 2048)]);
    }
    for _ in 0..6 {
        shapes.extend([(1536, 512), (512, 512), (512, 512), (1024, 512), (512, 512)]);
        shapes.extend([(2048, 512), (512, 2048)]);
    }
    let matrices: Vec<(usize, usize, Vec<f32>)> = (shapes.iter().enumerate())
        .map(|(i, &(n, k))| (n, k, values(n * k, i as u64)))
        .collect();
    let weights: usize = shapes.iter().map(|(n, k)| n * k).sum();
    let started = Instant::now();
    let quantized: Vec<QuantizedMatrix> = (matrices.iter())
        .map(|(n, k, w)| QuantizedMatrix::quantize(w, *n, *k, qkernel))
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "quantized {:.1} M weights ({:.0} MB f32 -> {:.0} MB int8) in {:.0} ms",
        weights as f64 / 1e6,
        weights as f64 * 4.0 / 1e6,
        quantized.iter().map(|q| q.bytes()).sum::<usize>() as f64 / 1e6,
        seconds * 1e3
    );
    drop(quantized);

    let Some(kernel) = Kernel::detect() else {
        println!("no AVX2/AVX-512 on this CPU: no packed f32 kernel to compare with");
        return Ok(());
    };
    // The f32 load packs the same matrices: the yardstick for the quantization's cost.
    let started = Instant::now();
    let packed: Vec<PackedMatrix> = (matrices.iter())
        .map(|(n, k, w)| PackedMatrix::pack(w, *n, *k, kernel))
        .collect();
    println!(
        "packed the same for the f32 kernels in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    drop(packed);
    println!("| rows | out x in | f32 ms | int8 ms | ratio |");
    println!("|---:|---|---:|---:|---:|");
    for (outputs, inputs) in [(62518, 512), (1536, 512), (2048, 512), (512, 2048)] {
        let w = values(outputs * inputs, 7);
        let packed = PackedMatrix::pack(&w, outputs, inputs, kernel);
        let quantized = QuantizedMatrix::quantize(&w, outputs, inputs, qkernel);
        for rows in [16, 64, 256, 1600] {
            let x = values(rows * inputs, 8);
            let f32_s = best_of(|| drop(packed.matmul_t(&x, rows, None)));
            let int8_s = best_of(|| drop(quantized.matmul_t(&x, rows, None)));
            println!(
                "| {rows} | {outputs} x {inputs} | {:.2} | {:.2} | {:.2}x |",
                f32_s * 1e3,
                int8_s * 1e3,
                f32_s / int8_s
            );
        }
    }
    Ok(())
}
