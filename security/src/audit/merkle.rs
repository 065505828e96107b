//! RFC 9162 (Certificate Transparency 2.0) Merkle trees over the records'
//! leaf hashes: the tree head (§2.1.1), a compact frontier that extends it
//! one leaf at a time in O(log n) memory, and consistency proofs (§2.1.4)
//! that a tree of size m is a prefix of a tree of size n.
//!
//! Leaves are given as their leaf hashes, SHA-256(0x00 || record bytes)
//! ([`Record::leaf_hash`](super::Record::leaf_hash)); interior nodes are
//! SHA-256(0x01 || left || right).

use super::digest::Digest;

/// Why a consistency proof was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error("the old size {old} is larger than the new size {new}")]
    OldLarger { old: u64, new: u64 },
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    #[error("the proof does not lead to the old root")]
    OldRootMismatch,
    #[error("the proof does not lead to the new root")]
    NewRootMismatch,
}

/// The hash of an interior node.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    Digest::of(&[&[0x01], &left.0, &right.0])
}

/// MTH({}): the hash of the empty string.
pub fn empty_root() -> Digest {
    Digest::of(&[])
}

/// The Merkle Tree Hash of `leaves` (leaf hashes).
pub fn root(leaves: &[Digest]) -> Digest {
    let mut f = Frontier::default();
    for l in leaves {
        f.push(*l);
    }
    f.root()
}

/// The right edge of a tree being built left to right: the roots of its
/// perfect subtrees, largest first, one per set bit of `size`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Digest>,
}

impl Frontier {
    /// Number of leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Digest) {
        let mut h = leaf;
        let mut s = self.size;
        // Each trailing one bit of the old size is a perfect subtree of the
        // same height as `h`: merge them.
        while s & 1 == 1 {
            if let Some(left) = self.nodes.pop() {
                h = node_hash(&left, &h);
            }
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The tree head of the leaves so far. In MTH the left subtree is
    /// always the largest perfect one, so the subtrees fold right to left.
    pub fn root(&self) -> Digest {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// The RFC 9162 §2.1.4.1 consistency proof from the first `old_size` of
/// `leaves` to all of them. `None` when `old_size > leaves.len()`. Empty
/// when `old_size` is 0 or equals the length.
pub fn consistency_proof(old_size: u64, leaves: &[Digest]) -> Option<Vec<Digest>> {
    let n = u64::try_from(leaves.len()).ok()?;
    if old_size > n {
        return None;
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < n {
        subproof(old_size, leaves, true, &mut proof)?;
    }
    Some(proof)
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2) that the tree of
/// `old_size` leaves with head `old_root` is a prefix of the tree of
/// `new_size` leaves with head `new_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Digest,
    new_root: &Digest,
    proof: &[Digest],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldLarger {
            old: old_size,
            new: new_size,
        });
    }
    // The empty tree is a prefix of every tree.
    if old_size == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::NewRootMismatch)
        };
    }
    // §2.1.4.2 steps 1–7.
    let (first, rest) = proof.split_first().ok_or(ProofError::WrongLength)?;
    let mut path: Vec<&Digest> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(old_root);
    }
    path.push(first);
    path.extend(rest);
    let mut fn_ = old_size - 1;
    let mut sn = new_size - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut iter = path.into_iter();
    let Some(start) = iter.next() else {
        return Err(ProofError::WrongLength);
    };
    let mut fr = *start;
    let mut sr = *start;
    for c in iter {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(ProofError::NewRootMismatch);
    }
    Ok(())
}

/// SUBPROOF(m, D[n], b) of RFC 9162 §2.1.4.1, appended to `out`.
/// `None` only on inconsistent arguments, which callers rule out.
fn subproof(m: u64, leaves: &[Digest], complete: bool, out: &mut Vec<Digest>) -> Option<()> {
    let n = u64::try_from(leaves.len()).ok()?;
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return Some(());
    }
    let k = largest_power_of_two_below(n);
    let (left, right) = leaves.split_at_checked(usize::try_from(k).ok()?)?;
    if m <= k {
        subproof(m, left, complete, out)?;
        out.push(root(right));
    } else {
        subproof(m - k, right, false, out)?;
        out.push(root(left));
    }
    Some(())
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn largest_power_of_two_below(n: u64) -> u64 {
    let p = n.next_power_of_two();
    if p == n {
        n / 2
    } else {
        p / 2
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf(i: u64) -> Digest {
        Digest::of(&[&[0x00], &i.to_be_bytes()])
    }

    /// MTH exactly as RFC 9162 §2.1.1 writes it.
    fn reference(leaves: &[Digest]) -> Digest {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(&reference(&leaves[..k]), &reference(&leaves[k..]))
            }
        }
    }

    #[test]
    fn known_small_trees() {
        let l: Vec<Digest> = (0..3).map(leaf).collect();
        assert_eq!(root(&[]), empty_root());
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(
            root(&l),
            node_hash(&node_hash(&l[0], &l[1]), &l[2]),
            "MTH of 3 leaves is (01)(2)"
        );
    }

    #[test]
    fn all_consistency_proofs_up_to_64() {
        let leaves: Vec<Digest> = (0..64).map(leaf).collect();
        for n in 0..=64usize {
            let new_root = root(&leaves[..n]);
            for m in 0..=n {
                let old_root = root(&leaves[..m]);
                let proof = consistency_proof(m as u64, &leaves[..n]).unwrap();
                verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof)
                    .unwrap_or_else(|e| panic!("m={m} n={n}: {e}"));
                if m > 0 && m < n {
                    // A different old tree of the same size is rejected.
                    let mut other = leaves[..m].to_vec();
                    other[m - 1] = leaf(1000);
                    let bad_old = root(&other);
                    assert!(
                        verify_consistency(m as u64, n as u64, &bad_old, &new_root, &proof)
                            .is_err(),
                        "m={m} n={n}"
                    );
                    // So is a wrong new root, and a proof for another size.
                    assert!(
                        verify_consistency(m as u64, n as u64, &old_root, &leaf(2000), &proof)
                            .is_err()
                    );
                    if m + 1 < n {
                        let r2 = root(&leaves[..m + 1]);
                        assert!(
                            verify_consistency(m as u64 + 1, n as u64, &r2, &new_root, &proof)
                                .is_err()
                        );
                    }
                }
            }
        }
        assert_eq!(consistency_proof(5, &leaves[..4]), None);
    }

    proptest! {
        #[test]
        fn frontier_matches_reference(n in 0usize..300) {
            let leaves: Vec<Digest> = (0..n as u64).map(leaf).collect();
            prop_assert_eq!(root(&leaves), reference(&leaves));
        }

        #[test]
        fn proofs_verify_and_reject_tampering(n in 1usize..200, m_frac in 0.0f64..1.0, flip in 0usize..64) {
            let leaves: Vec<Digest> = (0..n as u64).map(leaf).collect();
            let m = ((n as f64) * m_frac) as usize;
            let old = reference(&leaves[..m]);
            let new = reference(&leaves);
            let proof = consistency_proof(m as u64, &leaves).unwrap();
            prop_assert!(verify_consistency(m as u64, n as u64, &old, &new, &proof).is_ok());
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let i = flip % bad.len();
                bad[i].0[flip % 32] ^= 1;
                prop_assert!(verify_consistency(m as u64, n as u64, &old, &new, &bad).is_err());
            }
        }
    }
}
