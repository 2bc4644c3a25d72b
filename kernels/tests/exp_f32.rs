//! The vectorizable f32 exp behind CpuFloat::exp_shifted, against f64 exp.

use ferrotron_kernels::cpu::CpuFloat;

#[test]
fn exp_shifted_f32_accuracy_and_special_values() {
    // a dense sweep of the range used by softmax (x − max ≤ 0) and the positive side
    let xs: Vec<f32> = (0..=200_000)
        .map(|i| -100.0 + i as f32 * 0.000_944_1)
        .collect();
    let mut ys = xs.clone();
    f32::exp_shifted(&mut ys, 0.0);
    let mut worst = 0f64;
    for (&x, &y) in xs.iter().zip(&ys) {
        let want = (x as f64).exp();
        if want < f32::MIN_POSITIVE as f64 {
            assert_eq!(y, 0.0, "exp({x}) below the normal range must flush to 0");
        } else if x <= 88.0 {
            worst = worst.max(((y as f64) - want).abs() / want);
        }
    }
    println!(
        "exp_f32 max relative error on [-87.3, 88]: {worst:.2e} ({:.1} ulp)",
        worst / f32::EPSILON as f64
    );
    assert!(
        worst < 2.0 * f32::EPSILON as f64,
        "max relative error {worst:.2e}"
    );

    let mut special = [
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NAN,
        0.0,
        100.0,
        -100.0,
        1.0,
    ];
    f32::exp_shifted(&mut special, 0.0);
    assert_eq!(special[0], 0.0);
    assert_eq!(special[1], f32::INFINITY);
    assert!(special[2].is_nan());
    assert_eq!(special[3], 1.0);
    assert_eq!(special[4], f32::INFINITY);
    assert_eq!(special[5], 0.0);
    assert!((special[6] as f64 - 1f64.exp()).abs() < 1e-6);

    // the shift is subtracted first
    let mut shifted = [3.0f32, 2.0];
    f32::exp_shifted(&mut shifted, 3.0);
    assert_eq!(shifted[0], 1.0);
    assert!((shifted[1] as f64 - (-1f64).exp()).abs() < 1e-7);
}
