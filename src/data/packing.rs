//! Packing examples into rows of at most `cap` tokens: best-fit decreasing (longest example
//! first, into the fullest row it fits; ties by lower index), deterministic for a given input.
//! Each row lists its examples in ascending index order. Every length must be <= cap.

use std::collections::BTreeMap;

pub fn pack(lengths: &[usize], cap: usize) -> Vec<Vec<u32>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
    let mut rows: Vec<Vec<u32>> = Vec::new();
    // room -> rows with that much room left (ascending row index)
    let mut by_room: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in order {
        let len = lengths[i];
        debug_assert!(len <= cap);
        let found = by_room.range(len..).next().map(|(&room, rs)| (room, rs[0]));
        let (row, room) = match found {
            Some((room, r)) => {
                let list = by_room.get_mut(&room).expect("present");
                list.remove(0);
                if list.is_empty() {
                    by_room.remove(&room);
                }
                (r, room)
            }
            None => {
                rows.push(Vec::new());
                (rows.len() - 1, cap)
            }
        };
        rows[row].push(i as u32);
        let left = room - len;
        if left > 0 {
            let list = by_room.entry(left).or_default();
            let at = list.partition_point(|&r| r < row);
            list.insert(at, row);
        }
    }
    for r in &mut rows {
        r.sort_unstable();
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_fit_decreasing() {
        let lens = [5, 3, 8, 2, 6, 1];
        let rows = pack(&lens, 8);
        // 8 | 6+2 | 5+3 | 1
        assert_eq!(rows, vec![vec![2], vec![3, 4], vec![0, 1], vec![5]]);
        let mut all: Vec<u32> = rows.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..6).collect::<Vec<u32>>());
        for r in &rows {
            assert!(r.iter().map(|&i| lens[i as usize]).sum::<usize>() <= 8);
        }
    }
}
