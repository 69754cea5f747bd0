//! The limits' arithmetic at its boundaries.

use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const SEC: u64 = NANOS_PER_SEC;
const MINUTE: u64 = 60 * SEC;
const DAY: u64 = 86_400 * SEC;
/// A clock far from zero, as a real one is.
const T0: u64 = 1_764_000_000 * SEC;

fn admitted<S: Copy + std::fmt::Debug>(c: Check<S>) -> (S, u64) {
    match c {
        Check::Admitted {
            state, remaining, ..
        } => (state, remaining),
        other => panic!("expected admitted, got {other:?}"),
    }
}

fn retry_after<S: std::fmt::Debug>(c: Check<S>) -> u64 {
    match c {
        Check::Limited { retry_after_secs } => retry_after_secs,
        other => panic!("expected limited, got {other:?}"),
    }
}

/// Runs `n` checks of cost 1 at `now`, threading the state; how many were admitted.
fn drain(b: &TokenBucket, state: &mut Option<BucketState>, now: u64, n: u64) -> u64 {
    let mut admitted = 0;
    for _ in 0..n {
        if let Check::Admitted { state: s, .. } = b.check(*state, now, 1) {
            *state = Some(s);
            admitted += 1;
        }
    }
    admitted
}

#[test]
fn a_new_key_has_a_full_bucket_and_no_more() {
    let b = TokenBucket::new(10, MINUTE, 5).unwrap();
    let mut state = None;
    assert_eq!(drain(&b, &mut state, T0, 100), 5);
    // 10 a minute: one token every 6 s; the 6th request waits exactly that.
    assert_eq!(retry_after(b.check(state, T0, 1)), 6);
}

#[test]
fn refills_exactly_the_rate_never_past_the_burst() {
    let b = TokenBucket::new(10, MINUTE, 5).unwrap();
    let mut state = None;
    drain(&b, &mut state, T0, 5);
    // 5.999 s later: still nothing; at 6 s, exactly one.
    assert_eq!(drain(&b, &mut state, T0 + 6 * SEC - 1, 10), 0);
    assert_eq!(drain(&b, &mut state, T0 + 6 * SEC, 10), 1);
    // After a long idle, the burst and not a day's worth of refills.
    assert_eq!(drain(&b, &mut state, T0 + 30 * DAY, 1000), 5);
}

#[test]
fn admitted_over_time_is_burst_plus_refills() {
    // 7 per second, burst 3, checked every millisecond for 10 s: 3 + 70 exactly.
    let b = TokenBucket::new(7, SEC, 3).unwrap();
    let mut state = None;
    let mut admitted = 0;
    for ms in 0..10_000u64 {
        admitted += drain(&b, &mut state, T0 + ms * 1_000_000, 1);
    }
    // The last check is at 9.999 s: 69 whole refills.
    assert_eq!(admitted, 3 + 69);
}

#[test]
fn a_clock_that_goes_backwards_refills_nothing() {
    let b = TokenBucket::new(1, SEC, 2).unwrap();
    let mut state = None;
    drain(&b, &mut state, T0 + 10 * SEC, 2);
    assert_eq!(drain(&b, &mut state, T0, 10), 0, "earlier than the state");
    assert_eq!(drain(&b, &mut state, 0, 10), 0, "the epoch");
    // Forward again: only the time past the state counts.
    assert_eq!(drain(&b, &mut state, T0 + 11 * SEC, 10), 1);
}

#[test]
fn huge_and_tiny_rates_neither_overflow_nor_round_up() {
    // u64::MAX tokens a nanosecond, a full u64 burst, a day-old state.
    let b = TokenBucket::new(u64::MAX, 1, u64::MAX).unwrap();
    let (s, remaining) = admitted(b.check(None, T0, u64::MAX));
    assert_eq!(remaining, 0);
    let (_, remaining) = admitted(b.check(Some(s), u64::MAX, 1));
    assert_eq!(remaining, u64::MAX - 1);
    // One token a day: a request a second after the bucket emptied waits the rest of the day.
    let b = TokenBucket::new(1, DAY, 1).unwrap();
    let (s, _) = admitted(b.check(None, T0, 1));
    assert_eq!(retry_after(b.check(Some(s), T0 + SEC, 1)), 86_399);
    assert_eq!(drain(&b, &mut Some(s), T0 + DAY - 1, 1), 0);
    assert_eq!(drain(&b, &mut Some(s), T0 + DAY, 1), 1);
}

#[test]
fn a_cost_over_the_burst_is_never_admitted() {
    let b = TokenBucket::new(100, SEC, 10).unwrap();
    assert_eq!(retry_after(b.check(None, T0, 11)), u64::MAX);
    let w = FixedWindow::new(10, MINUTE).unwrap();
    assert_eq!(retry_after(w.check(None, T0, 11)), u64::MAX);
}

#[test]
fn zero_rates_and_empty_buckets_are_not_limiters() {
    assert_eq!(TokenBucket::new(0, SEC, 1), None);
    assert_eq!(TokenBucket::new(1, 0, 1), None);
    assert_eq!(TokenBucket::new(1, SEC, 0), None);
    assert_eq!(FixedWindow::new(1, 0), None);
    // A window of count 0 denies everything, in every window.
    let w = FixedWindow::new(0, SEC).unwrap();
    assert_eq!(retry_after(w.check(None, T0, 1)), u64::MAX);
}

#[test]
fn windows_are_aligned_to_the_clock_and_reset_at_their_edge() {
    let w = FixedWindow::new(3, MINUTE).unwrap();
    // The start of the minute T0 is in: windows begin at whole minutes of the clock.
    let start = T0 / MINUTE * MINUTE;
    let mut state = None;
    for k in 0..3 {
        let (s, remaining) = admitted(w.check(state, start + 59 * SEC, 1));
        assert_eq!(remaining, 2 - k);
        state = Some(s);
    }
    // The 4th, one nanosecond before the edge, waits one (rounded up) second.
    assert_eq!(retry_after(w.check(state, start + MINUTE - 1, 1)), 1);
    assert_eq!(retry_after(w.check(state, start + 30 * SEC, 1)), 30);
    // At the edge, a new window.
    let (_, remaining) = admitted(w.check(state, start + MINUTE, 1));
    assert_eq!(remaining, 2);
}

#[test]
fn a_window_does_not_reset_when_the_clock_steps_back() {
    let w = FixedWindow::new(2, SEC).unwrap();
    let (s, _) = admitted(w.check(None, T0 + 5 * SEC, 2));
    // Back into an earlier window: the later window's count still applies.
    assert!(matches!(w.check(Some(s), T0, 1), Check::Limited { .. }));
}

#[test]
fn states_round_trip_through_bytes_and_refuse_other_lengths() {
    let b = TokenBucket::new(3, SEC, 9).unwrap();
    let (s, _) = admitted(b.check(None, T0, 4));
    assert_eq!(BucketState::decode(&s.encode()), Some(s));
    assert_eq!(BucketState::decode(&s.encode()[..23]), None);
    assert_eq!(BucketState::decode(&[0u8; 25]), None);
    let w = FixedWindow::new(5, MINUTE).unwrap();
    let (s, _) = admitted(w.check(None, T0, 2));
    assert_eq!(WindowState::decode(&s.encode()), Some(s));
    assert_eq!(WindowState::decode(&[]), None);
}
