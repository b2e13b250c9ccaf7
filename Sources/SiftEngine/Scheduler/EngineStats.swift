/// Live counters of the engine, for metrics and tests.
public struct EngineStats: Sendable {
    public var queuedTokens = 0
    /// Admission refuses calls that would take `queuedTokens` beyond this.
    public var maxQueuedTokens = 0
    public var activeRequests = 0
    public var completed = 0
    public var failed: [EngineError.Code: Int] = [:]
    public var steps = 0
    /// Steps that served interactive calls only, and those run between two sublayers of a batch step.
    public var interactiveSteps = 0
    public var stepsBetweenSublayers = 0
    /// Tokens of cancelled or expired calls that left a step before its end.
    public var droppedTokens = 0
    /// Tokens computed in all steps, and the steps' token capacity (fill = ratio).
    public var stepTokens = 0
    public var stepCapacity = 0
    public var computeSeconds = 0.0
    /// Seconds its steps held the compute threads (`WorkerPool`): less than `computeSeconds`
    /// when another model's steps took turns on the same cores.
    public var coreSeconds = 0.0
    /// Seconds its steps waited for the compute threads (another model's turns).
    public var coreWaitSeconds = 0.0
    /// KV memory referenced by sequences and the cache.
    public var kvBytes = 0
    /// Most KV memory live at once so far.
    public var kvPeakBytes = 0
    /// KV held or reserved by running requests (what the budget is checked against).
    public var kvReservedBytes = 0
    /// The engine's KV budget, and the prefix cache's share of it.
    public var kvBudgetBytes = 0
    public var prefixCacheBudgetBytes = 0
    public var prefixCacheBytes = 0
    public var prefixLookupTokens = 0
    public var prefixHitTokens = 0
    /// Documents looked up in the score cache, and found.
    public var scoreCacheLookups = 0
    public var scoreCacheHits = 0

    public init() {}
}
