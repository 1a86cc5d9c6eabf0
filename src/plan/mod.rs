//! Pure planning: `Spec` + observed state + revision → `Plan`. No I/O.
