// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title PriceFeed
/// @notice A Chainlink-style price-feed aggregator (AggregatorV3Interface's read side) for
/// ctripd's tests and devnet: its owner sets each round's answer and update time, so tests can
/// drive a feed to fresh, stale and moved values.
contract PriceFeed {
    uint8 public immutable decimals;
    string public description;
    uint256 public constant version = 4;
    address public immutable owner;

    uint80 private round;
    int256 private answer;
    uint256 private startedAt;
    uint256 private updatedAt;

    constructor(uint8 decimals_, string memory description_) {
        decimals = decimals_;
        description = description_;
        owner = msg.sender;
    }

    /// @notice A new round with `answer_`, updated at `updatedAt_` (a unix time; 0: this block's).
    function setAnswer(int256 answer_, uint256 updatedAt_) external {
        require(msg.sender == owner, "not the owner");
        uint256 when = updatedAt_ == 0 ? block.timestamp : updatedAt_;
        round += 1;
        answer = answer_;
        startedAt = when;
        updatedAt = when;
    }

    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer_, uint256 startedAt_, uint256 updatedAt_, uint80 answeredInRound)
    {
        return (round, answer, startedAt, updatedAt, round);
    }
}
