// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Forwarder
/// @notice Moves native coin through a contract, so the recipient is paid by an internal call
/// that only traces reveal. `revertAfterSend` makes a reverted transaction whose inner transfer
/// must not be counted.
contract Forwarder {
    function forward(address payable to) external payable {
        _send(to, msg.value);
    }

    function forwardTwice(address payable a, address payable b) external payable {
        uint256 half = msg.value / 2;
        _send(a, half);
        _send(b, msg.value - half);
    }

    function revertAfterSend(address payable to) external payable {
        _send(to, msg.value);
        revert("reverted after send");
    }

    function _send(address payable to, uint256 amount) internal {
        (bool ok, ) = to.call{value: amount}("");
        require(ok, "native transfer failed");
    }
}
