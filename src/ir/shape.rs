//! Static shapes with a symbolic batch axis `N`: one graph serves every batch
//! size, and code generation resolves `N` when it compiles.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// The batch size, fixed only when the graph runs.
    N,
    Size(usize),
}

impl Dim {
    pub fn resolve(self, batch: usize) -> usize {
        match self {
            Dim::N => batch,
            Dim::Size(n) => n,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    /// `[N, dims...]`: a batch of samples of shape `dims`.
    pub fn batch_of(dims: &[usize]) -> Shape {
        Shape(
            std::iter::once(Dim::N)
                .chain(dims.iter().map(|&d| Dim::Size(d)))
                .collect(),
        )
    }

    pub fn fixed(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Size(d)).collect())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn resolve(&self, batch: usize) -> Vec<usize> {
        self.0.iter().map(|d| d.resolve(batch)).collect()
    }

    pub fn numel(&self, batch: usize) -> usize {
        self.0.iter().map(|d| d.resolve(batch)).product()
    }

    /// The sizes, if no axis is the batch.
    pub fn sizes(&self) -> Option<Vec<usize>> {
        self.0
            .iter()
            .map(|d| match d {
                Dim::Size(n) => Some(*n),
                Dim::N => None,
            })
            .collect()
    }

    /// Elements per batch entry and whether the batch axis appears: the
    /// element count is `per * N` (or `per`).
    pub fn count(&self) -> (usize, bool) {
        let per = self
            .0
            .iter()
            .filter_map(|d| if let Dim::Size(n) = d { Some(*n) } else { None })
            .product();
        (per, self.0.contains(&Dim::N))
    }

    /// NumPy broadcasting: align from the right; a size-1 axis stretches.
    pub fn broadcast(&self, other: &Shape) -> Option<Shape> {
        let rank = self.rank().max(other.rank());
        let at = |s: &Shape, i: usize| {
            let pad = rank - s.rank();
            if i < pad { Dim::Size(1) } else { s.0[i - pad] }
        };
        (0..rank)
            .map(|i| match (at(self, i), at(other, i)) {
                (a, b) if a == b => Some(a),
                (Dim::Size(1), b) => Some(b),
                (a, Dim::Size(1)) => Some(a),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(Shape)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match d {
                Dim::N => f.write_str("N")?,
                Dim::Size(n) => write!(f, "{n}")?,
            }
        }
        f.write_str("]")
    }
}
