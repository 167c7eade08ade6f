//! nuvol-catalog
