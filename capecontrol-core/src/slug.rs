//! Slugs from names: `"Cape AI Guide"` → `cape-ai-guide`.

/// Longest slug produced, in characters.
pub const MAX_SLUG_CHARS: usize = 64;

/// Makes a URL-safe slug from a display name.
///
/// Letters and digits (of any script) are lowercased and kept; every other run of characters
/// becomes one `-`; leading and trailing dashes are dropped; the result is cut to
/// [`MAX_SLUG_CHARS`] characters on a character boundary. A name with no letter or digit gives
/// `"agent"`.
///
/// ```
/// use capecontrol_core::slugify;
/// assert_eq!(slugify("Cape AI Guide"), "cape-ai-guide");
/// assert_eq!(slugify("  FinanceAgent v2!! "), "financeagent-v2");
/// assert_eq!(slugify("Énergie — Zürich"), "énergie-zürich");
/// assert_eq!(slugify("🤖"), "agent");
/// ```
pub fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut count = 0usize;
    let mut pending_dash = false;
    for c in name.chars() {
        if c.is_alphanumeric() {
            if pending_dash && !out.is_empty() {
                if count + 1 >= MAX_SLUG_CHARS {
                    break;
                }
                out.push('-');
                count += 1;
            }
            pending_dash = false;
            for lc in c.to_lowercase().filter(|lc| lc.is_alphanumeric()) {
                if count >= MAX_SLUG_CHARS {
                    break;
                }
                out.push(lc);
                count += 1;
            }
            if count >= MAX_SLUG_CHARS {
                break;
            }
        } else {
            pending_dash = true;
        }
    }
    if out.is_empty() {
        "agent".to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn examples() {
        assert_eq!(slugify("Cape AI Guide"), "cape-ai-guide");
        assert_eq!(slugify("EnergyAgent"), "energyagent");
        assert_eq!(slugify("a--b__c"), "a-b-c");
        assert_eq!(slugify("---"), "agent");
        assert_eq!(slugify("İstanbul"), "istanbul");
    }

    proptest! {
        #[test]
        fn slugs_are_well_formed(name in "\\PC{0,100}") {
            let slug = slugify(&name);
            prop_assert!(!slug.is_empty());
            prop_assert!(slug.chars().count() <= MAX_SLUG_CHARS);
            prop_assert!(!slug.starts_with('-') && !slug.ends_with('-'));
            prop_assert!(!slug.contains("--"));
            prop_assert!(slug.chars().all(|c| c == '-' || c.is_alphanumeric()));
            prop_assert_eq!(slugify(&slug), slug);
        }
    }
}
