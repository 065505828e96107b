//! Tag-name globs: `*` matches any run of characters (including `/`), `?`
//! exactly one character, everything else itself. No escapes, no classes:
//! the PI-style tag search operators only.

/// Whether `name` matches `pattern`. Linear in their lengths times the
/// number of `*` (the classic backtrack-to-last-star algorithm), so a
/// hostile pattern cannot take exponential time.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    // Position after the last `*` seen, and the name position it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match (p.get(pi), n.get(ni)) {
            (Some('*'), _) => {
                star = Some((pi + 1, ni));
                pi += 1;
            }
            (Some('?'), Some(_)) => {
                pi += 1;
                ni += 1;
            }
            (Some(a), Some(b)) if a == b => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry.
                Some((sp, sn)) => {
                    pi = sp;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn table() {
        for (pat, name, want) in [
            ("*", "", true),
            ("*", "a/b/c", true),
            ("plant/*/temp", "plant/line1/temp", true),
            ("plant/*/temp", "plant/line1/pressure", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*temp*", "x_temp_y", true),
            ("abc", "abcd", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("", "", true),
            ("é?", "éà", true),
        ] {
            assert_eq!(glob_match(pat, name), want, "{pat} vs {name}");
        }
    }
}
