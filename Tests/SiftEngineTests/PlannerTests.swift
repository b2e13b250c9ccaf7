@testable import SiftEngine
import XCTest

final class PlannerTests: XCTestCase {
    typealias R = Planner.RequestSummary
    func D(_ index: Int, _ remaining: Int, started: Bool = false, blocks: Int = 0) -> Planner.DocumentSummary {
        .init(index: index, remaining: remaining, started: started, blocks: blocks)
    }

    func testPrefixComesFirstAndDocumentsWaitForIt() {
        let plan = Planner.plan([R(id: 1, priority: 0, servedTokens: 0, arrival: 1, prefixRemaining: 40,
                                   documents: [D(0, 100), D(1, 100)])], budget: 1000, chunk: 512)
        XCTAssertEqual(plan, [.init(request: 1, target: .prefix, tokens: 40, final: true)])
    }

    func testALoneRequestFillsTheBudgetInChunks() {
        let plan = Planner.plan([R(id: 1, priority: 0, servedTokens: 0, arrival: 1, prefixRemaining: 0,
                                   documents: [D(0, 700), D(1, 100), D(2, 300)])], budget: 1000, chunk: 512)
        XCTAssertEqual(plan, [
            .init(request: 1, target: .document(0), tokens: 512, final: false),
            .init(request: 1, target: .document(1), tokens: 100, final: true),
            .init(request: 1, target: .document(2), tokens: 300, final: true),
        ])
    }

    func testAShortRequestGetsItsShareNextToALongOne() {
        let long = R(id: 1, priority: 0, servedTokens: 5000, arrival: 1, prefixRemaining: 0,
                     documents: [D(0, 4000), D(1, 4000), D(2, 4000), D(3, 4000)])
        let short = R(id: 2, priority: 0, servedTokens: 0, arrival: 2, prefixRemaining: 0, documents: [D(0, 200), D(1, 200)])
        let plan = Planner.plan([long, short], budget: 1024, chunk: 512)
        // The least-served (short) request goes first in every pass.
        XCTAssertEqual(plan.first, .init(request: 2, target: .document(0), tokens: 200, final: true))
        XCTAssertTrue(plan.contains(.init(request: 2, target: .document(1), tokens: 200, final: true)))
        XCTAssertEqual(plan.reduce(0) { $0 + $1.tokens }, 1024)
    }

    func testPriorityWinsThenArrival() {
        let low = R(id: 1, priority: 0, servedTokens: 0, arrival: 1, prefixRemaining: 0, documents: [D(0, 600)])
        let high = R(id: 2, priority: 5, servedTokens: 0, arrival: 2, prefixRemaining: 0, documents: [D(0, 600)])
        let plan = Planner.plan([low, high], budget: 512, chunk: 512)
        XCTAssertEqual(plan, [.init(request: 2, target: .document(0), tokens: 512, final: false)])
        let tie = Planner.plan([R(id: 7, priority: 0, servedTokens: 0, arrival: 9, prefixRemaining: 0, documents: [D(0, 300)]),
                                R(id: 8, priority: 0, servedTokens: 0, arrival: 3, prefixRemaining: 0, documents: [D(0, 300)])],
                               budget: 300, chunk: 512)
        XCTAssertEqual(tie.map(\.request), [8])
    }

    func testNothingToDoGivesAnEmptyPlan() {
        XCTAssertEqual(Planner.plan([], budget: 100, chunk: 10), [])
        XCTAssertEqual(Planner.plan([R(id: 1, priority: 0, servedTokens: 0, arrival: 1, prefixRemaining: 0, documents: [])],
                                    budget: 100, chunk: 10), [])
    }

    // MARK: KV memory

    /// A request starts only when its prefix and slot fit; nothing behind a request waiting for
    /// memory starts before it.
    func testARequestStartsOnlyWhenItsReservationFits() {
        let running = R(id: 1, priority: 0, servedTokens: 900, arrival: 1, prefixRemaining: 0,
                        documents: [D(0, 100, started: true, blocks: 8)], started: true, slotBlocks: 8, inFlightBlocks: 8)
        let big = R(id: 2, priority: 0, servedTokens: 0, arrival: 2, prefixRemaining: 32, documents: [D(0, 300, blocks: 20)],
                    started: false, startBlocks: 2 + 20, slotBlocks: 20)
        let small = R(id: 3, priority: 0, servedTokens: 0, arrival: 3, prefixRemaining: 16, documents: [D(0, 10, blocks: 1)],
                      started: false, startBlocks: 1 + 1, slotBlocks: 1)
        // 21 free: the big one (22) waits, and so does the small one behind it.
        XCTAssertEqual(Planner.plan([running, big, small], budget: 1000, chunk: 512, freeBlocks: 21),
                       [.init(request: 1, target: .document(0), tokens: 100, final: true)])
        // 22 free: the big one starts with its prefix; the small one does not fit in what is left.
        XCTAssertEqual(Planner.plan([running, big, small], budget: 1000, chunk: 512, freeBlocks: 22), [
            .init(request: 2, target: .prefix, tokens: 32, final: true),
            .init(request: 1, target: .document(0), tokens: 100, final: true),
        ])
        // 24 free: both start.
        XCTAssertEqual(Set(Planner.plan([running, big, small], budget: 1000, chunk: 512, freeBlocks: 24).map(\.request)), [1, 2, 3])
    }

    /// A started request always runs its next document in its slot; more documents side by side
    /// only with free blocks beyond it.
    func testDocumentsBeyondTheSlotNeedFreeBlocks() {
        let r = R(id: 1, priority: 0, servedTokens: 0, arrival: 1, prefixRemaining: 0,
                  documents: [D(0, 50, blocks: 4), D(1, 50, blocks: 3), D(2, 50, blocks: 4)],
                  started: true, slotBlocks: 4, inFlightBlocks: 0)
        XCTAssertEqual(Planner.plan([r], budget: 1000, chunk: 512, freeBlocks: 0),
                       [.init(request: 1, target: .document(0), tokens: 50, final: true)])
        XCTAssertEqual(Planner.plan([r], budget: 1000, chunk: 512, freeBlocks: 3).map(\.target), [.document(0), .document(1)])
        XCTAssertEqual(Planner.plan([r], budget: 1000, chunk: 512, freeBlocks: 7).map(\.target), [.document(0), .document(1), .document(2)])
        // Already started documents go on whatever the memory.
        var running = r
        running.documents[0].started = true
        running.inFlightBlocks = 4
        XCTAssertEqual(Planner.plan([running], budget: 1000, chunk: 512, freeBlocks: 0).map(\.target), [.document(0)])
    }

    /// Without memory limits (the default) plans are what they always were.
    func testUnlimitedMemoryChangesNothing() {
        let a = R(id: 1, priority: 0, servedTokens: 0, arrival: 1, prefixRemaining: 0, documents: [D(0, 300, blocks: 99)],
                  started: false, startBlocks: 1_000_000, slotBlocks: 99)
        XCTAssertEqual(Planner.plan([a], budget: 100, chunk: 64),
                       [.init(request: 1, target: .document(0), tokens: 64, final: false)])
    }

    // MARK: latency classes

    let policy = Planner.Policy(budget: 1024, chunk: 512, interactiveTokens: 2048)

    /// A W1-sized batch call (20 × 300 tokens) and a small call (4 × 90) waiting together.
    var batchCall: R { R(id: 1, priority: 0, servedTokens: 3000, arrival: 1, prefixRemaining: 0, documents: (0..<20).map { D($0, 300) }) }
    var smallCall: R { R(id: 2, priority: 0, servedTokens: 0, arrival: 2, prefixRemaining: 60, documents: (0..<4).map { D($0, 90) }) }

    func testInteractiveWorkRunsAloneInAStepSizedForIt() {
        XCTAssertTrue(Planner.isInteractive(smallCall, policy))
        XCTAssertFalse(Planner.isInteractive(batchCall, policy))
        let first = Planner.nextStep([batchCall, smallCall], policy: policy)
        XCTAssertEqual(first, .init(items: [.init(request: 2, target: .prefix, tokens: 60, final: true)], interactive: true))
        var ready = smallCall
        ready.prefixRemaining = 0
        let second = Planner.nextStep([batchCall, ready], policy: policy)
        XCTAssertEqual(second.items, (0..<4).map { .init(request: 2, target: .document($0), tokens: 90, final: true) })
        XCTAssertTrue(second.interactive)
        // Alone, batch work fills the whole budget again.
        let alone = Planner.nextStep([batchCall], policy: policy)
        XCTAssertFalse(alone.interactive)
        XCTAssertEqual(alone.items.reduce(0) { $0 + $1.tokens }, 1024)
    }

    func testStatedPriorityDecidesTheClassBeforeSize() {
        var background = smallCall
        (background.statedPriority, background.priority) = (-1, -1)
        XCTAssertFalse(Planner.isInteractive(background, policy))
        var urgent = batchCall
        (urgent.statedPriority, urgent.priority) = (1, 1)
        XCTAssertTrue(Planner.isInteractive(urgent, policy))
        // With only interactive calls (or only batch ones) steps mix them as before.
        let both = Planner.nextStep([urgent, smallCall], policy: policy)
        XCTAssertTrue(both.interactive)
        XCTAssertEqual(Set(both.items.map(\.request)), [1, 2])
        XCTAssertFalse(Planner.isInteractive(batchCall, Planner.Policy(budget: 1024, chunk: 512, interactiveTokens: 0)))
    }

    func testANearDeadlineMakesABatchCallInteractive() {
        // 6000 tokens left at 1000 tokens/s: 6 s of compute.
        var p = policy
        p.tokensPerSecond = 1000
        var call = batchCall
        call.secondsLeft = 30
        XCTAssertFalse(Planner.isInteractive(call, p))
        call.secondsLeft = 11
        XCTAssertTrue(Planner.isInteractive(call, p))
        // Unmeasured rate: the deadline does not change the class.
        XCTAssertFalse(Planner.isInteractive(call, policy))
    }

    func testEarlierDeadlineGoesFirstAtEqualPriority() {
        let late = R(id: 1, priority: 0, servedTokens: 0, arrival: 1, prefixRemaining: 0, documents: [D(0, 600)], secondsLeft: 9)
        let soon = R(id: 2, priority: 0, servedTokens: 0, arrival: 2, prefixRemaining: 0, documents: [D(0, 600)], secondsLeft: 2)
        let none = R(id: 3, priority: 0, servedTokens: 0, arrival: 0, prefixRemaining: 0, documents: [D(0, 600)])
        XCTAssertEqual(Planner.plan([none, late, soon], budget: 1800, chunk: 600).map(\.request), [2, 1, 3])
    }

    func testABatchCallUnservedForAnAgingPeriodJoinsTheInteractiveSteps() {
        var waiting = batchCall
        waiting.priority = 1.2  // stated 0, aged more than one level
        XCTAssertTrue(Planner.isInteractive(waiting, policy))
        let step = Planner.nextStep([waiting, smallCall, R(id: 3, priority: 0, servedTokens: 0, arrival: 3, prefixRemaining: 0,
                                                            documents: [D(0, 4000)])], policy: policy)
        XCTAssertTrue(step.interactive)
        XCTAssertEqual(step.items.first?.request, 1, "the aged call goes first")
        XCTAssertFalse(step.items.contains { $0.request == 3 })
    }

    func testInteractiveWorkThatCannotStartLetsBatchWorkRun() {
        var small = smallCall
        small.started = false
        small.startBlocks = 10
        var running = batchCall
        running.documents[0].started = true
        let step = Planner.nextStep([running, small], policy: policy, freeBlocks: 2)
        XCTAssertFalse(step.interactive)
        XCTAssertEqual(Set(step.items.map(\.request)), [1])
    }

    func testInteractiveWorkRunsBetweenTheLayersOfABatchStepOnly() {
        let batchStep = Planner.nextStep([batchCall], policy: policy)
        let between = Planner.stepBetweenSublayers(of: batchStep, waiting: [smallCall], policy: policy)
        XCTAssertEqual(between, .init(items: [.init(request: 2, target: .prefix, tokens: 60, final: true)], interactive: true))
        // Nothing interactive waiting, an interactive step running, or paused long enough: go on.
        XCTAssertNil(Planner.stepBetweenSublayers(of: batchStep, waiting: [], policy: policy))
        var otherBatch = batchCall
        otherBatch.id = 3
        XCTAssertNil(Planner.stepBetweenSublayers(of: batchStep, waiting: [otherBatch], policy: policy))
        let interactiveStep = Planner.nextStep([smallCall], policy: policy)
        XCTAssertNil(Planner.stepBetweenSublayers(of: interactiveStep, waiting: [smallCall], policy: policy))
        XCTAssertNil(Planner.stepBetweenSublayers(of: batchStep, pausedFor: policy.maxPauseSeconds, waiting: [smallCall], policy: policy))
    }
}
