//! Sliding-window arithmetic shared by the layer checker and the IR's shape
//! rules, so both agree by construction.

use crate::parse::ast::Padding;

/// Padding before and after one spatial axis, Keras/TensorFlow style: `same`
/// puts the odd pixel at the bottom/right.
pub fn padding(input: usize, window: usize, stride: usize, padding: Padding) -> (usize, usize) {
    match padding {
        Padding::Valid => (0, 0),
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + window).saturating_sub(input);
            (total / 2, total - total / 2)
        }
    }
}

/// Output length of a window sliding over `input` elements padded by
/// `pad_lo + pad_hi` (negative padding crops), after dilating the input by
/// `input_dilation` and the window by `window_dilation`; `None` when the
/// window does not fit even once.
pub fn output_len(
    input: usize,
    pad: (i64, i64),
    input_dilation: usize,
    window: usize,
    window_dilation: usize,
    stride: usize,
) -> Option<usize> {
    if input == 0 || window == 0 || stride == 0 || input_dilation == 0 || window_dilation == 0 {
        return None;
    }
    let dilated_in = (input as i64 - 1) * input_dilation as i64 + 1;
    let padded = dilated_in + pad.0 + pad.1;
    let extent = (window as i64 - 1) * window_dilation as i64 + 1;
    if padded < extent {
        return None;
    }
    Some(((padded - extent) / stride as i64 + 1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_keras() {
        // TensorFlow's rule: out = ceil(in / stride), extra pixel at the end.
        assert_eq!(padding(28, 3, 1, Padding::Same), (1, 1));
        assert_eq!(padding(28, 2, 1, Padding::Same), (0, 1));
        assert_eq!(padding(5, 2, 2, Padding::Same), (0, 1));
        assert_eq!(padding(6, 3, 2, Padding::Same), (0, 1));
        assert_eq!(padding(7, 4, 3, Padding::Same), (1, 2));
        for (n, k, s) in [(28, 3, 1), (28, 2, 2), (7, 4, 3), (1, 5, 2), (13, 1, 4)] {
            let (lo, hi) = padding(n, k, s, Padding::Same);
            assert_eq!(output_len(n, (lo as i64, hi as i64), 1, k, 1, s), Some(n.div_ceil(s)));
        }
    }

    #[test]
    fn valid_output_is_floor() {
        assert_eq!(output_len(28, (0, 0), 1, 3, 1, 1), Some(26));
        assert_eq!(output_len(7, (0, 0), 1, 2, 1, 2), Some(3));
        assert_eq!(output_len(2, (0, 0), 1, 3, 1, 1), None);
        // Cropping, dilation: the forms conv gradients take.
        assert_eq!(output_len(6, (0, -1), 1, 3, 2, 1), Some(1));
        assert_eq!(output_len(3, (2, 3), 2, 3, 1, 1), Some(8));
    }
}
