//! Where everything of a sheet goes: tile grids, their colour bars, bar
//! charts and headings, in pixels of the finished image.

/// Pixels between neighbouring tiles, and around a grid.
pub const GAP: u32 = 2;
/// Largest width a grid is zoomed to.
pub const MAX_GRID_WIDTH: u32 = 1400;
/// Width past which panels wrap onto the next row of the sheet.
pub const MAX_ROW_WIDTH: u32 = 1500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub fn right(&self) -> u32 {
        self.x + self.width
    }

    pub fn bottom(&self) -> u32 {
        self.y + self.height
    }

    pub fn overlaps(&self, other: &Rect) -> bool {
        self.x < other.right() && other.x < self.right() && self.y < other.bottom() && other.y < self.bottom()
    }
}

/// Columns and rows of a grid of `n` tiles: as square as it can be, with
/// no empty row.
pub fn grid(n: usize) -> (usize, usize) {
    if n == 0 {
        return (0, 0);
    }
    let columns = (n as f64).sqrt().ceil() as usize;
    (columns, n.div_ceil(columns))
}

/// How many times each tile pixel is repeated: a tile of `size` (height,
/// width) grows to about `target` pixels, while `columns` of them stay
/// within `MAX_GRID_WIDTH`; at least 1.
pub fn zoom(size: (usize, usize), columns: usize, target: u32) -> u32 {
    let side = size.0.max(size.1).max(1) as u32;
    let wanted = (target / side).max(1);
    let columns = columns.max(1) as u32;
    let room = MAX_GRID_WIDTH.saturating_sub(GAP * (columns + 1)) / columns;
    wanted.min(room / size.1.max(1) as u32).max(1)
}

/// The rectangles of `count` tiles of `size` pixels zoomed `zoom` times,
/// `columns` to a row, in row-major order, in a grid whose corner is at
/// `origin`.
pub fn tiles(count: usize, columns: usize, size: (usize, usize), zoom: u32, origin: (u32, u32)) -> Vec<Rect> {
    let (height, width) = (size.0 as u32 * zoom, size.1 as u32 * zoom);
    let columns = columns.max(1);
    (0..count)
        .map(|i| Rect {
            x: origin.0 + GAP + (i % columns) as u32 * (width + GAP),
            y: origin.1 + GAP + (i / columns) as u32 * (height + GAP),
            width,
            height,
        })
        .collect()
}

/// The size of the grid that `tiles` fills.
pub fn grid_size(count: usize, columns: usize, size: (usize, usize), zoom: u32) -> (u32, u32) {
    let columns = columns.clamp(1, count.max(1));
    let rows = count.div_ceil(columns).max(1) as u32;
    let columns = columns as u32;
    (
        GAP + columns * (size.1 as u32 * zoom + GAP),
        GAP + rows * (size.0 as u32 * zoom + GAP),
    )
}

/// Places boxes of the given sizes left to right, wrapping past
/// `MAX_ROW_WIDTH`, `spacing` apart, from `origin`; returns their corners
/// and the size of the whole.
pub fn flow(sizes: &[(u32, u32)], origin: (u32, u32), spacing: u32) -> (Vec<(u32, u32)>, (u32, u32)) {
    let mut corners = Vec::with_capacity(sizes.len());
    let (mut x, mut y, mut row_height, mut width) = (origin.0, origin.1, 0, 0);
    for &(w, h) in sizes {
        if x > origin.0 && x + w > origin.0 + MAX_ROW_WIDTH {
            x = origin.0;
            y += row_height + spacing;
            row_height = 0;
        }
        corners.push((x, y));
        width = width.max(x + w);
        row_height = row_height.max(h);
        x += w + spacing;
    }
    (corners, (width, y + row_height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_are_square_enough_with_no_empty_row() {
        assert_eq!(grid(1), (1, 1));
        assert_eq!(grid(3), (2, 2));
        assert_eq!(grid(5), (3, 2));
        assert_eq!(grid(7), (3, 3));
        assert_eq!(grid(8), (3, 3));
        assert_eq!(grid(64), (8, 8));
        assert_eq!(grid(65), (9, 8));
        for n in 1..200 {
            let (c, r) = grid(n);
            assert!(c * r >= n && c * (r - 1) < n, "{n}: {c}x{r}");
        }
    }

    #[test]
    fn wide_grids_zoom_less() {
        assert_eq!(zoom((3, 3), 8, 48), 16);
        assert_eq!(zoom((28, 28), 1, 200), 7);
        assert_eq!(zoom((3, 3), 200, 48), 1);
        assert_eq!(zoom((100, 1000), 4, 48), 1);
    }

    #[test]
    fn flowing_boxes_wrap_past_the_row_width() {
        let (at, size) = flow(&[(1000, 50), (600, 80), (100, 10)], (10, 20), 5);
        assert_eq!(at, vec![(10, 20), (10, 75), (615, 75)]);
        assert_eq!(size, (1010, 155));
    }
}
