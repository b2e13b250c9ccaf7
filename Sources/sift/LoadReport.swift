import Foundation

/// `sift load`'s live line on a terminal: calls, docs/s, p50/p99 so far, errors; redrawn in
/// place twice a second on stderr (stdout keeps only the final table or JSON).
enum LiveProgress {
    static func run(_ recorder: Recorder, started: ContinuousClock.Instant) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            let s = await recorder.snapshot()
            let seconds = max(0.001, (ContinuousClock.now - started).seconds)
            let line = String(format: "%6.1f s  %d calls ok, %d failed  %.1f docs/s  p50 %.1f ms  p99 %.1f ms",
                              seconds, s.ok, s.failed, Double(s.documents) / seconds, s.p50, s.p99)
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
        }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}

extension Recorder {
    /// A self-contained page (inline SVG and CSS, no scripts, nothing fetched): the summary, a
    /// warning when documents came from the score cache, latency by percentile, calls/s and
    /// docs/s (computed and cached) over time on their own axes, failures, the first calls one
    /// by one (a short run has few points to plot), and the run's parameters.
    func html(summary: Report, parameters: [(key: String, value: String)]) -> String {
        let curve = percentileCurve()
        // x: 1/(1 − p), log scale, as HdrHistogram plots percentiles; capped at 99.999%.
        let points = curve.map { (x: log10(1 / max(1e-5, 1 - $0.percentile / 100)), y: $0.ms) }
        let latency = okCount >= 2
            ? SVGChart(title: "Latency by percentile (ms)", xLabels: [(0, "0%"), (1, "90%"), (2, "99%"), (3, "99.9%"), (4, "99.99%"), (5, "99.999%")],
                       xMax: 5, series: [("latency", "#2b6cb0", points)]).svg
            : "<p>\(okCount) successful call: no distribution to plot (its latency is in the table above and in the calls below).</p>"
        // One point per second of the run, at its middle; the last, partial second as a rate over
        // its length, or, when under half a second, merged into the second before it (a call
        // ending 50 ms into a new second would otherwise plot as 20 calls/s).
        var bins = timeline.indices.map { (start: Double($0), length: min(1, max(0.05, runSeconds - Double($0))), counts: timeline[$0]) }
        if bins.count >= 2, let last = bins.last, last.length < 0.5 {
            bins.removeLast()
            bins[bins.count - 1].length += last.length
            bins[bins.count - 1].counts.add(last.counts)
        }
        func perSecond(_ value: (Second) -> Int) -> [(x: Double, y: Double)] {
            bins.map { ($0.start + $0.length / 2, Double(value($0.counts)) / $0.length) }
        }
        let xMax = max(1, runSeconds)
        let labels = Self.secondLabels(xMax)
        let callsChart = SVGChart(title: "Calls answered per second", xLabels: labels, xMax: xMax,
                                  series: [("calls/s", "#2b6cb0", perSecond { $0.ok })]).svg
        var documentSeries = [("documents/s computed", "#2f855a", perSecond { $0.documents - $0.cachedDocuments })]
        if summary.cachedDocuments > 0 { documentSeries.append(("documents/s from the score cache", "#dd6b20", perSecond { $0.cachedDocuments })) }
        let documentsChart = SVGChart(title: "Documents scored per second", xLabels: labels, xMax: xMax, series: documentSeries).svg
        let failed = timeline.reduce(0) { $0 + $1.failed }
        let failures = failed == 0 ? "<p>No call failed.</p>"
            : SVGChart(title: "Failed calls per second", xLabels: labels, xMax: xMax, series: [("failed/s", "#c53030", perSecond { $0.failed })]).svg
        let cacheNote = summary.cachedDocuments == 0 ? "" : """
            <p class="warn">\(Self.grouped(summary.cachedDocuments)) of \(Self.grouped(summary.documents)) documents \
            (\(String(format: "%.1f", 100 * Double(summary.cachedDocuments) / Double(max(1, summary.documents))))%) were answered \
            from the server's score cache, not computed: the throughput counts them. Runs tag their queries unless \
            <code>--reuse-scores</code> is given; <code>--zipf</code> repeats pairs on purpose.</p>
            """
        let rows = parameters.map { "<tr><th>\(Self.escape($0.key))</th><td>\(Self.escape($0.value))</td></tr>" }.joined()
        let percentiles = [("p50", 50.0), ("p90", 90), ("p99", 99), ("p99.9", 99.9), ("max", 100)].map { name, p in
            "<tr><th>\(name)</th><td class=\"n\">\(Self.grouped(latencyMs(at: p), decimals: 1)) ms</td></tr>"
        }.joined()
        let callRows = calls.enumerated().map { i, c in
            "<tr><td class=\"n\">\(i + 1)</td><td class=\"n\">\(Self.grouped(c.start, decimals: 3)) s</td>" +
            "<td class=\"n\">\(Self.grouped(c.ms, decimals: 1)) ms</td><td class=\"n\">\(Self.grouped(c.documents))</td>" +
            "<td class=\"n\">\(Self.grouped(c.cachedDocuments))</td><td>\(c.status)</td></tr>"
        }.joined()
        // Listed when the run is short enough to read (a long one is what the charts are for).
        let listed = okCount + failed <= Self.callsListed
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>sift load report</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #1a202c; }
            table { border-collapse: collapse; margin: 1em 0; } th, td { text-align: left; padding: 2px 12px 2px 0; }
            th { font-weight: 600; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
            pre { background: #f7fafc; padding: 1em; overflow-x: auto; }
            .warn { background: #fffaf0; border-left: 4px solid #dd6b20; padding: .6em 1em; }
            svg { display: block; margin: 1.5em 0; } .axis { stroke: #a0aec0; } text { font-size: 11px; fill: #4a5568; }
            </style></head><body>
            <h1>sift load</h1>
            <pre>\(Self.escape(summary.table))</pre>
            \(cacheNote)
            <h2>Latency</h2>
            <table>\(percentiles)</table>
            \(latency)
            <h2>Over time</h2>
            \(callsChart)
            \(documentsChart)
            \(failures)
            \(listed ? "<h2>Calls</h2><table><tr><th>#</th><th>started</th><th>latency</th><th>documents</th><th>from cache</th><th>status</th></tr>\(callRows)</table>" : "")
            <h2>Parameters</h2>
            <table>\(rows)</table>
            </body></html>

            """
    }

    static func secondLabels(_ seconds: Double) -> [(Double, String)] {
        if seconds < 2 {
            // A short run: tenths of its length.
            return stride(from: 0.0, through: seconds, by: max(0.1, (seconds / 5 * 10).rounded(.up) / 10)).map { ($0, String(format: "%.1f s", $0)) }
        }
        let step = max(1, Int((seconds / 8).rounded(.up)))
        return stride(from: 0, through: Int(seconds), by: step).map { (Double($0), "\($0) s") }
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}

/// A line chart as inline SVG: numbered y axis from 0, labelled x ticks, a legend.
struct SVGChart {
    var title: String
    var xLabels: [(Double, String)]
    var xMax: Double
    var series: [(name: String, color: String, points: [(x: Double, y: Double)])]

    var svg: String {
        let (width, height, left, bottom, top, right) = (900.0, 280.0, 60.0, 30.0, 30.0, 40.0)
        let yMax = Self.niceCeiling(series.flatMap { $0.points.map(\.y) }.max() ?? 1)
        // Ticks at round values: 1 and 2 × 10^k in quarters, 5 × 10^k in fifths.
        let lead = (yMax / pow(10, floor(log10(yMax)))).rounded()
        let divisions = lead == 5 ? 5 : 4
        func px(_ x: Double) -> Double { left + x / max(xMax, 1e-9) * (width - left - right) }
        func py(_ y: Double) -> Double { height - bottom - y / yMax * (height - bottom - top) }
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" role=\"img\" aria-label=\"\(title)\">"
        out += "<text x=\"\(left)\" y=\"16\" style=\"font-size:13px;font-weight:600\">\(title)</text>"
        out += "<line class=\"axis\" x1=\"\(left)\" y1=\"\(py(0))\" x2=\"\(width - right)\" y2=\"\(py(0))\"/>"
        out += "<line class=\"axis\" x1=\"\(left)\" y1=\"\(py(0))\" x2=\"\(left)\" y2=\"\(top)\"/>"
        for i in 0...divisions {
            let y = yMax * Double(i) / Double(divisions)
            out += "<text x=\"\(left - 6)\" y=\"\(py(y) + 4)\" text-anchor=\"end\">\(Self.format(y))</text>"
            if i > 0 { out += "<line x1=\"\(left)\" y1=\"\(py(y))\" x2=\"\(width - right)\" y2=\"\(py(y))\" stroke=\"#edf2f7\"/>" }
        }
        for (x, label) in xLabels where x <= xMax {
            out += "<text x=\"\(px(x))\" y=\"\(height - 10)\" text-anchor=\"middle\">\(label)</text>"
        }
        for (i, s) in series.enumerated() {
            let path = s.points.map { String(format: "%.1f,%.1f", px($0.x), py($0.y)) }.joined(separator: " ")
            out += "<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\" points=\"\(path)\"/>"
            // Dots too, so a run of one or two points still shows them.
            if s.points.count <= 60 {
                for p in s.points { out += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" ", px(p.x), py(p.y)) + "fill=\"\(s.color)\"/>" }
            }
            out += "<text x=\"\(width - right - 220)\" y=\"\(top + 14 * Double(i))\" style=\"fill:\(s.color)\">\(s.name)</text>"
        }
        return out + "</svg>"
    }

    /// 1, 2 or 5 × 10^k at or above `v`.
    static func niceCeiling(_ v: Double) -> Double {
        guard v > 0 else { return 1 }
        let magnitude = pow(10, floor(log10(v)))
        return [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= v } ?? 10 * magnitude
    }

    static func format(_ v: Double) -> String {
        Recorder.grouped(v, decimals: v >= 100 || v == v.rounded() ? 0 : 1)
    }
}
