@testable import SiftEngine
import XCTest

final class PlannerTests: XCTestCase {
    typealias R = Planner.RequestSummary

    func testPrefixComesFirstAndDocumentsWaitForIt() {
        let plan = Planner.plan([R(id: 1, priority: 0, servedTokens: 0, arrival: 1, prefixRemaining: 40,
                                   documents: [(0, 100), (1, 100)])], budget: 1000, chunk: 512)
        XCTAssertEqual(plan, [.init(request: 1, target: .prefix, tokens: 40, final: true)])
    }

    func testALoneRequestFillsTheBudgetInChunks() {
        let plan = Planner.plan([R(id: 1, priority: 0, servedTokens: 0, arrival: 1, prefixRemaining: 0,
                                   documents: [(0, 700), (1, 100), (2, 300)])], budget: 1000, chunk: 512)
        XCTAssertEqual(plan, [
            .init(request: 1, target: .document(0), tokens: 512, final: false),
            .init(request: 1, target: .document(1), tokens: 100, final: true),
            .init(request: 1, target: .document(2), tokens: 300, final: true),
        ])
    }

    func testAShortRequestGetsItsShareNextToALongOne() {
        let long = R(id: 1, priority: 0, servedTokens: 5000, arrival: 1, prefixRemaining: 0,
                     documents: [(0, 4000), (1, 4000), (2, 4000), (3, 4000)])
        let short = R(id: 2, priority: 0, servedTokens: 0, arrival: 2, prefixRemaining: 0, documents: [(0, 200), (1, 200)])
        let plan = Planner.plan([long, short], budget: 1024, chunk: 512)
        // The least-served (short) request goes first in every pass.
        XCTAssertEqual(plan.first, .init(request: 2, target: .document(0), tokens: 200, final: true))
        XCTAssertTrue(plan.contains(.init(request: 2, target: .document(1), tokens: 200, final: true)))
        XCTAssertEqual(plan.reduce(0) { $0 + $1.tokens }, 1024)
    }

    func testPriorityWinsThenArrival() {
        let low = R(id: 1, priority: 0, servedTokens: 0, arrival: 1, prefixRemaining: 0, documents: [(0, 600)])
        let high = R(id: 2, priority: 5, servedTokens: 0, arrival: 2, prefixRemaining: 0, documents: [(0, 600)])
        let plan = Planner.plan([low, high], budget: 512, chunk: 512)
        XCTAssertEqual(plan, [.init(request: 2, target: .document(0), tokens: 512, final: false)])
        let tie = Planner.plan([R(id: 7, priority: 0, servedTokens: 0, arrival: 9, prefixRemaining: 0, documents: [(0, 300)]),
                                R(id: 8, priority: 0, servedTokens: 0, arrival: 3, prefixRemaining: 0, documents: [(0, 300)])],
                               budget: 300, chunk: 512)
        XCTAssertEqual(tie.map(\.request), [8])
    }

    func testNothingToDoGivesAnEmptyPlan() {
        XCTAssertEqual(Planner.plan([], budget: 100, chunk: 10), [])
        XCTAssertEqual(Planner.plan([R(id: 1, priority: 0, servedTokens: 0, arrival: 1, prefixRemaining: 0, documents: [])],
                                    budget: 100, chunk: 10), [])
    }
}
