//! Colour scales: how a value becomes a pixel, and what the scale's bar
//! says.

/// A colour scale shared by every tile of a panel, so that tiles compare.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    /// Signed values (weights): blue below zero, white at zero, red above,
    /// symmetric up to `limit`.
    Diverging { limit: f32 },
    /// Values from `low` (black) to `high` (white): activations, pixels.
    Grey { low: f32, high: f32 },
    /// Three channels at once (an RGB filter): each channel's value from
    /// `-limit` (none of that colour) through zero (mid grey) to `limit`.
    Rgb { limit: f32 },
    /// Saliency: from nothing (black) to `high` (yellow), through red.
    Heat { high: f32 },
}

pub const BLUE: [u8; 3] = [33, 102, 172];
pub const WHITE: [u8; 3] = [255, 255, 255];
pub const RED: [u8; 3] = [178, 24, 43];
const BLACK: [u8; 3] = [0, 0, 0];
const HOT: [u8; 3] = [220, 30, 20];
const YELLOW: [u8; 3] = [255, 230, 60];

impl Scale {
    /// Diverging, up to the largest magnitude of `values` (1 if all are zero).
    pub fn diverging(values: impl IntoIterator<Item = f32>) -> Scale {
        Scale::Diverging {
            limit: magnitude(values),
        }
    }

    /// Grey from zero for values that are never negative (after a ReLU or
    /// a pool of them), else from the lowest; to the highest.
    pub fn grey(values: impl IntoIterator<Item = f32>) -> Scale {
        let (low, high) = values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold((0.0f32, f32::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let high = if high > low { high } else { low + 1.0 };
        Scale::Grey { low, high }
    }

    /// Input pixels: their own range [0, 1] when they keep to it.
    pub fn pixels(values: impl IntoIterator<Item = f32> + Clone) -> Scale {
        let inside = values.clone().into_iter().all(|v| (0.0..=1.0).contains(&v));
        if inside {
            Scale::Grey { low: 0.0, high: 1.0 }
        } else {
            Scale::grey(values)
        }
    }

    pub fn rgb(values: impl IntoIterator<Item = f32>) -> Scale {
        Scale::Rgb {
            limit: magnitude(values),
        }
    }

    pub fn heat(values: impl IntoIterator<Item = f32>) -> Scale {
        Scale::Heat {
            high: magnitude(values),
        }
    }

    /// The colour of one value (of one channel, for `Rgb`).
    pub fn colour(self, v: f32) -> [u8; 3] {
        match self {
            Scale::Diverging { limit } => {
                let t = (v / limit).clamp(-1.0, 1.0);
                if t < 0.0 {
                    mix(WHITE, BLUE, -t)
                } else {
                    mix(WHITE, RED, t)
                }
            }
            Scale::Grey { low, high } => mix(BLACK, WHITE, ((v - low) / (high - low)).clamp(0.0, 1.0)),
            Scale::Rgb { limit } => {
                let level = channel(v, limit);
                [level; 3]
            }
            Scale::Heat { high } => {
                let t = (v / high).clamp(0.0, 1.0);
                if t < 0.5 {
                    mix(BLACK, HOT, t * 2.0)
                } else {
                    mix(HOT, YELLOW, t * 2.0 - 1.0)
                }
            }
        }
    }

    /// The colour of a pixel of three channels under an `Rgb` scale.
    pub fn colour_rgb(self, v: [f32; 3]) -> [u8; 3] {
        match self {
            Scale::Rgb { limit } => v.map(|c| channel(c, limit)),
            Scale::Diverging { .. } | Scale::Grey { .. } | Scale::Heat { .. } => {
                self.colour((v[0] + v[1] + v[2]) / 3.0)
            }
        }
    }

    /// The lowest and highest values the bar shows.
    pub fn range(self) -> (f32, f32) {
        match self {
            Scale::Diverging { limit } | Scale::Rgb { limit } => (-limit, limit),
            Scale::Grey { low, high } => (low, high),
            Scale::Heat { high } => (0.0, high),
        }
    }
}

/// The largest magnitude, or 1 where every value is zero (or none finite).
fn magnitude(values: impl IntoIterator<Item = f32>) -> f32 {
    let m = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    if m > 0.0 { m } else { 1.0 }
}

fn channel(v: f32, limit: f32) -> u8 {
    (((v / limit).clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// `a` moved a fraction `t` of the way to `b`.
pub fn mix(a: [u8; 3], b: [u8; 3], t: f32) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    [0, 1, 2].map(|i| (f32::from(a[i]) + (f32::from(b[i]) - f32::from(a[i])) * t).round() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ends_and_the_middle_of_each_scale() {
        let d = Scale::diverging([-0.5, 2.0, 1.0]);
        assert_eq!(d, Scale::Diverging { limit: 2.0 });
        assert_eq!(d.colour(0.0), WHITE);
        assert_eq!(d.colour(2.0), RED);
        assert_eq!(d.colour(-2.0), BLUE);
        assert_eq!(d.colour(-9.0), BLUE);
        let g = Scale::grey([0.0, 4.0, 1.0]);
        assert_eq!(g, Scale::Grey { low: 0.0, high: 4.0 });
        assert_eq!(g.colour(0.0), BLACK);
        assert_eq!(g.colour(4.0), WHITE);
        assert_eq!(g.colour(2.0), [128, 128, 128]);
        assert_eq!(Scale::grey([0.0, 0.0]).range(), (0.0, 1.0));
        let rgb = Scale::rgb([0.5, -1.0]);
        assert_eq!(rgb.colour_rgb([1.0, 0.0, -1.0]), [255, 128, 0]);
        assert_eq!(Scale::pixels([0.0, 1.0]), Scale::Grey { low: 0.0, high: 1.0 });
        assert_eq!(Scale::pixels([-1.0, 3.0]), Scale::Grey { low: -1.0, high: 3.0 });
        let h = Scale::heat([0.0, -3.0]);
        assert_eq!(h.colour(0.0), BLACK);
        assert_eq!(h.colour(3.0), YELLOW);
    }
}
