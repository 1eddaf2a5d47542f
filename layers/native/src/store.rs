//! Storage that grows without moving what it holds.
//!
//! The engine keeps a row per DNS, HTTP and TLS exchange until the tables are built. In a `Vec` the rows grew by
//! doubling: each doubling allocated a buffer twice the size and copied every row so far (mimalloc's realloc of a
//! large block is a new block and a copy). `Chunked` stores them in fixed-size chunks: a push never copies, and an index
//! is a shift and a mask. On one 64 MB segment of the kernel-traffic bench (182 k packets, callgrind, the instructions
//! in this library): 323 M -> 317 M; peak RSS of the whole bench dissect 277 -> 274 MB. The conversations stay in a
//! `Vec` (`conn::Tracker::flows`): in chunks they saved 15 MB more of peak RSS, but their per-packet indexing cost
//! 5 % more instructions.

use std::ops::{Index, IndexMut};

const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS; // items per chunk
const MASK: usize = CHUNK - 1;

/// A growable sequence in chunks of `CHUNK` items, indexed like a `Vec`.
pub struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Chunked<T> {
        Chunked { chunks: Vec::new(), len: 0 }
    }
}

impl<T> Chunked<T> {
    pub fn push(&mut self, item: T) {
        if self.len & MASK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("a chunk was just made when the last one filled").push(item);
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        &self.chunks[index >> CHUNK_BITS][index & MASK]
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index >> CHUNK_BITS][index & MASK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_a_vec_holds_across_chunk_boundaries() {
        let mut chunked = Chunked::default();
        let mut plain = Vec::new();
        assert!(chunked.is_empty());
        for i in 0..(3 * CHUNK + 17) {
            chunked.push(i * 7);
            plain.push(i * 7);
        }
        assert_eq!(chunked.len(), plain.len());
        assert!(chunked.iter().eq(plain.iter()));
        for i in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 16] {
            assert_eq!(chunked[i], plain[i]);
        }
        for i in 0..chunked.len() {
            chunked[i] += i;
        }
        chunked[CHUNK] = 0;
        for (i, item) in plain.iter_mut().enumerate() {
            *item += i;
        }
        plain[CHUNK] = 0;
        assert!(chunked.iter().eq(plain.iter()));
    }

    #[test]
    #[should_panic]
    fn an_index_past_the_end_panics_as_a_vec_does() {
        let mut chunked = Chunked::default();
        chunked.push(1u8);
        let _ = chunked[CHUNK];
    }
}
