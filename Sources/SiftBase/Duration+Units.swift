/// Duration as plain numbers, for logs, metrics, wire fields and reports.
extension Duration {
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
    public var milliseconds: Double { seconds * 1e3 }
    public var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}
