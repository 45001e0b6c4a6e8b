// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title SweepDelegate
/// @notice Code a ctripd deposit address delegates to (EIP-7702). Its only effect is moving the
/// delegated address's whole balance of a token, or of the native coin, to the treasury fixed at
/// deployment. Anyone may trigger a sweep: the destination cannot be chosen.
/// - `treasury` is immutable: it lives in the code, so code running in a deposit's context reads
///   it from there, never from the deposit's storage. The contract writes no storage at all.
/// - No arbitrary calls: the only calls made are `balanceOf`/`transfer(treasury, balance)` on the
///   named token and a plain value transfer to the treasury.
/// - Tokens that return no data from `transfer` (USDT) are accepted; one returning false reverts.
/// - `sweepMany` sweeps a list of delegated deposits in one call; one failing entry does not
///   stop the others (ctripd checks each entry's Transfer in the receipt), but a batch short of
///   gas reverts as a whole.
contract SweepDelegate {
    address public immutable treasury;

    event Swept(address indexed token, uint256 amount);

    constructor(address treasury_) {
        require(treasury_ != address(0), "no treasury");
        treasury = treasury_;
    }

    /// @notice A delegated deposit still receives native coin (a payment, a refund of gas).
    receive() external payable {}

    /// @notice Moves this address's whole balance of `token` (address(0): native coin) to the
    /// treasury. Called on a delegated deposit, "this address" is the deposit.
    function sweep(address token) external {
        uint256 amount;
        if (token == address(0)) {
            amount = address(this).balance;
            if (amount == 0) return;
            (bool sent, ) = treasury.call{value: amount}("");
            require(sent, "native transfer failed");
        } else {
            require(token.code.length > 0, "token has no code");
            (bool read, bytes memory balance) = token.staticcall(
                abi.encodeWithSelector(0x70a08231, address(this))
            );
            require(read && balance.length >= 32, "balanceOf failed");
            amount = abi.decode(balance, (uint256));
            if (amount == 0) return;
            (bool ok, bytes memory ret) = token.call(
                abi.encodeWithSelector(0xa9059cbb, treasury, amount)
            );
            require(ok && (ret.length == 0 || abi.decode(ret, (bool))), "token transfer failed");
        }
        emit Swept(token, amount);
    }

    /// @notice Sweeps `tokens[i]` at each delegated `deposits[i]`.
    function sweepMany(address[] calldata deposits, address[] calldata tokens) external {
        require(deposits.length == tokens.length, "length mismatch");
        for (uint256 i = 0; i < deposits.length; ++i) {
            uint256 before = gasleft();
            (bool ok, ) = deposits[i].call(abi.encodeCall(SweepDelegate.sweep, (tokens[i])));
            // A deposit not delegated here or a failing token is skipped; running out of gas
            // reverts the whole batch, so a gas estimate never counts on skipped entries.
            require(ok || gasleft() > before / 63, "out of gas");
        }
    }
}
