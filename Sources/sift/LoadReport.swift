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
    /// A self-contained page (inline SVG and CSS, no scripts, nothing fetched): the summary, the
    /// latency percentile curve, throughput and errors per second, and the run's parameters.
    func html(summary: Report, parameters: [(key: String, value: String)]) -> String {
        let curve = percentileCurve()
        // x: 1/(1 − p), log scale, as HdrHistogram plots percentiles; capped at 99.999%.
        let points = curve.map { (x: log10(1 / max(1e-5, 1 - $0.percentile / 100)), y: $0.ms) }
        let latency = SVGChart(title: "Latency by percentile (ms)", xLabels: [(0, "0%"), (1, "90%"), (2, "99%"), (3, "99.9%"), (4, "99.99%"), (5, "99.999%")],
                               xMax: 5, series: [("latency", "#2b6cb0", points)]).svg
        // One point per second of the run, at its middle; the last, partial second as a rate over its length.
        let length = timeline.indices.map { min(1, max(0.05, runSeconds - Double($0))) }
        func perSecond(_ value: ((ok: Int, failed: Int, documents: Int)) -> Int) -> [(x: Double, y: Double)] {
            timeline.indices.map { (Double($0) + length[$0] / 2, Double(value(timeline[$0])) / length[$0]) }
        }
        let xMax = max(1, runSeconds)
        let throughput = SVGChart(title: "Throughput per second", xLabels: Self.secondLabels(xMax), xMax: xMax,
                                  series: [("documents/s", "#2f855a", perSecond { $0.documents }),
                                           ("calls/s", "#2b6cb0", perSecond { $0.ok })]).svg
        let failures = SVGChart(title: "Failed calls per second", xLabels: Self.secondLabels(xMax), xMax: xMax,
                                series: [("failed/s", "#c53030", perSecond { $0.failed })]).svg
        let rows = parameters.map { "<tr><th>\(Self.escape($0.key))</th><td>\(Self.escape($0.value))</td></tr>" }.joined()
        let percentiles = [("p50", 50.0), ("p90", 90), ("p99", 99), ("p99.9", 99.9), ("max", 100)].map { name, p in
            "<tr><th>\(name)</th><td>\(String(format: "%.1f", latencyMs(at: p))) ms</td></tr>"
        }.joined()
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>sift load report</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #1a202c; }
            table { border-collapse: collapse; margin: 1em 0; } th, td { text-align: left; padding: 2px 12px 2px 0; }
            th { font-weight: 600; } pre { background: #f7fafc; padding: 1em; overflow-x: auto; }
            svg { display: block; margin: 1.5em 0; } .axis { stroke: #a0aec0; } text { font-size: 11px; fill: #4a5568; }
            </style></head><body>
            <h1>sift load</h1>
            <pre>\(Self.escape(summary.table))</pre>
            <h2>Latency</h2>
            <table>\(percentiles)</table>
            \(latency)
            <h2>Over time</h2>
            \(throughput)
            \(failures)
            <h2>Parameters</h2>
            <table>\(rows)</table>
            </body></html>

            """
    }

    static func secondLabels(_ seconds: Double) -> [(Double, String)] {
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
        func px(_ x: Double) -> Double { left + x / max(xMax, 1e-9) * (width - left - right) }
        func py(_ y: Double) -> Double { height - bottom - y / yMax * (height - bottom - top) }
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" role=\"img\" aria-label=\"\(title)\">"
        out += "<text x=\"\(left)\" y=\"16\" style=\"font-size:13px;font-weight:600\">\(title)</text>"
        out += "<line class=\"axis\" x1=\"\(left)\" y1=\"\(py(0))\" x2=\"\(width - right)\" y2=\"\(py(0))\"/>"
        out += "<line class=\"axis\" x1=\"\(left)\" y1=\"\(py(0))\" x2=\"\(left)\" y2=\"\(top)\"/>"
        for i in 0...4 {
            let y = yMax * Double(i) / 4
            out += "<text x=\"\(left - 6)\" y=\"\(py(y) + 4)\" text-anchor=\"end\">\(Self.format(y))</text>"
            if i > 0 { out += "<line x1=\"\(left)\" y1=\"\(py(y))\" x2=\"\(width - right)\" y2=\"\(py(y))\" stroke=\"#edf2f7\"/>" }
        }
        for (x, label) in xLabels where x <= xMax {
            out += "<text x=\"\(px(x))\" y=\"\(height - 10)\" text-anchor=\"middle\">\(label)</text>"
        }
        for (i, s) in series.enumerated() {
            let path = s.points.map { String(format: "%.1f,%.1f", px($0.x), py($0.y)) }.joined(separator: " ")
            out += "<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\" points=\"\(path)\"/>"
            out += "<text x=\"\(width - right - 150)\" y=\"\(top + 14 * Double(i))\" style=\"fill:\(s.color)\">\(s.name)</text>"
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
        v >= 100 || v == v.rounded() ? String(format: "%.0f", v) : String(format: "%.1f", v)
    }
}
