//! The convex hull of a bitrate ladder: over encodes at every resolution, the upper-left
//! boundary of (log bitrate, quality) — at each rate, the resolution worth encoding at (the
//! per-title method). Points under the hull are never the best choice. `kiln-bench tune`
//! reports it; per-title ladders pick their rungs on it.

/// Indices of `points` (`(kbps, score)`) on the upper convex hull in (log10 kbps, score),
/// from the lowest rate up to the best score, each step gaining quality.
pub fn upper_hull(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].0 > 0.0 && points[i].0.is_finite() && points[i].1.is_finite())
        .collect();
    order.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[b].1.total_cmp(&points[a].1))
    });
    let xy = |i: usize| (points[i].0.log10(), points[i].1);
    let mut hull: Vec<usize> = Vec::new();
    for i in order {
        // Same rate as the last point: only the better one can be on the hull.
        if let Some(&last) = hull.last() {
            if points[last].0 == points[i].0 {
                continue;
            }
        }
        while hull.len() >= 2 {
            let (o, a, b) = (xy(hull[hull.len() - 2]), xy(hull[hull.len() - 1]), xy(i));
            let cross = (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0);
            // a lies on or under the chord o→b: not on the upper hull.
            if cross >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(i);
    }
    // Past the best score, more bits buy nothing.
    let mut best = 0;
    for (k, &i) in hull.iter().enumerate() {
        if points[i].1 > points[hull[best]].1 {
            best = k;
        }
    }
    hull.truncate(best + 1);
    hull
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hull_switches_resolution_where_the_curves_cross() {
        // 360p wins at low rates, 720p at high rates (a typical ladder).
        let p360 = [(200.0, 70.0), (400.0, 78.0), (800.0, 83.0), (1600.0, 85.0)];
        let p720 = [(200.0, 60.0), (400.0, 72.0), (800.0, 84.0), (1600.0, 88.0)];
        let all: Vec<(f64, f64)> = p360.iter().chain(p720.iter()).copied().collect();
        let hull = upper_hull(&all);
        let on: Vec<(f64, f64)> = hull.iter().map(|&i| all[i]).collect();
        assert_eq!(
            on,
            vec![(200.0, 70.0), (400.0, 78.0), (800.0, 84.0), (1600.0, 88.0)]
        );
    }

    #[test]
    fn points_under_a_chord_and_past_the_best_are_dropped() {
        let pts = [
            (100.0, 50.0),
            (1000.0, 90.0),
            (316.2278, 60.0),
            (2000.0, 89.0),
            (3000.0, 90.0),
        ];
        // (316, 60) lies under the chord (100,50)–(1000,90) in log rate; past 1000 kbps the
        // score never beats 90.
        assert_eq!(upper_hull(&pts), vec![0, 1]);
        assert!(upper_hull(&[]).is_empty());
        assert_eq!(upper_hull(&[(5.0, 1.0)]), vec![0]);
    }
}
