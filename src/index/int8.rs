//! Scalar quantisation of unit vectors to int8 with one f32 scale per vector: a quarter of the
//! bytes of f32 (388 for a 384-d embedding instead of 1,536).
//!
//! Each coordinate becomes `round(127 x / max|x|)`; the scale is chosen so that the dequantised
//! vector `codes * scale` has unit length, so a dot product with a unit query is the cosine
//! with the quantised direction (recall@10 against f32: see `benches/index.rs`).

/// Quantises `v` into `codes` (cleared first); returns the scale (0 for a zero vector).
pub fn quantize_into(v: &[f32], codes: &mut Vec<i8>) -> f32 {
    codes.clear();
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if !(max.is_finite() && max > 0.0) {
        codes.resize(v.len(), 0);
        return 0.0;
    }
    let k = 127.0 / max;
    let mut norm2 = 0.0f32;
    codes.extend(v.iter().map(|x| {
        // In [-127, 127] by construction of `k`.
        let c = (x * k).round().clamp(-127.0, 127.0);
        norm2 += c * c;
        c as i8
    }));
    if norm2 > 0.0 { 1.0 / norm2.sqrt() } else { 0.0 }
}

/// `v` quantised: (codes, scale).
pub fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let mut codes = Vec::with_capacity(v.len());
    let scale = quantize_into(v, &mut codes);
    (codes, scale)
}

/// The f32 vector that `codes` and `scale` stand for.
pub fn dequantize(codes: &[i8], scale: f32) -> Vec<f32> {
    codes.iter().map(|&c| f32::from(c) * scale).collect()
}

/// Dot product of an f32 `query` with the quantised vector (`codes`, `scale`). Eight
/// independent sums so the compiler vectorises it.
pub fn dot(query: &[f32], codes: &[i8], scale: f32) -> f32 {
    debug_assert_eq!(
        query.len(),
        codes.len(),
        "dot of vectors of different lengths"
    );
    let n = query.len().min(codes.len());
    let (q, c) = (&query[..n], &codes[..n]);
    let mut sums = [0.0f32; 8];
    let q_chunks = q.chunks_exact(8);
    let c_chunks = c.chunks_exact(8);
    let tail: f32 = q_chunks
        .remainder()
        .iter()
        .zip(c_chunks.remainder())
        .map(|(x, &y)| x * f32::from(y))
        .sum();
    for (cq, cc) in q_chunks.zip(c_chunks) {
        for ((sum, x), &y) in sums.iter_mut().zip(cq).zip(cc) {
            *sum += x * f32::from(y);
        }
    }
    (sums.iter().sum::<f32>() + tail) * scale
}

/// Dot product of two code vectors, exact in integers (vectorises with plain SSE2: no i8 to
/// f32 conversion in the scan). Multiply by both scales for the cosine.
pub fn dot_codes(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len(), "dot of vectors of different lengths");
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut sums = [0i32; 16];
    let a_chunks = a.chunks_exact(16);
    let b_chunks = b.chunks_exact(16);
    let tail: i32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for ((sum, &x), &y) in sums.iter_mut().zip(ca).zip(cb) {
            // |x * y| <= 127 * 127: i16 products, summed in i32 (no overflow below 2^17 dims).
            *sum += i32::from(i16::from(x) * i16::from(y));
        }
    }
    sums.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::cosine;
    use crate::index::testdata::unit_vectors;

    #[test]
    fn quantised_cosines_stay_within_a_hundredth_of_the_f32_ones() {
        let v = unit_vectors(200, 384, 5);
        let q = unit_vectors(20, 384, 6);
        let mut worst = 0.0f32;
        for x in &v {
            let (codes, scale) = quantize(x);
            assert!((dot(x, &codes, scale) - 1.0).abs() < 1e-3);
            for query in &q {
                worst = worst.max((dot(query, &codes, scale) - cosine(query, x)).abs());
            }
        }
        assert!(worst < 0.01, "worst cosine error {worst}");
    }

    #[test]
    fn integer_dot_of_codes_matches_the_float_dot() {
        let v = unit_vectors(2, 384, 8);
        let (a, sa) = quantize(&v[0]);
        let (b, sb) = quantize(&v[1]);
        let float: f32 = dequantize(&a, sa)
            .iter()
            .zip(dequantize(&b, sb))
            .map(|(x, y)| x * y)
            .sum();
        let int = dot_codes(&a, &b) as f32 * sa * sb;
        assert!((float - int).abs() < 1e-5, "{float} vs {int}");
        assert!((int - cosine(&v[0], &v[1])).abs() < 0.01);
    }

    #[test]
    fn dequantised_vector_has_unit_length_and_a_zero_vector_stays_zero() {
        let v = &unit_vectors(1, 64, 7)[0];
        let (codes, scale) = quantize(v);
        let back = dequantize(&codes, scale);
        assert!((cosine(&back, &back) - 1.0).abs() < 1e-5);
        assert!(cosine(&back, v) > 0.999);
        let (codes, scale) = quantize(&[0.0; 8]);
        assert_eq!((codes, scale), (vec![0; 8], 0.0));
        let (_, scale) = quantize(&[f32::NAN, 1.0]);
        assert_eq!(scale, 0.0);
    }
}
