// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title FalseToken
/// @notice A hostile ERC-20 for ctripd's tests: `transfer` succeeds as a transaction but
/// returns false and moves nothing, as some real tokens do on failure. Anyone may mint.
contract FalseToken {
    uint8 public constant decimals = 6;
    uint256 public totalSupply;

    mapping(address => uint256) public balanceOf;

    event Transfer(address indexed from, address indexed to, uint256 value);

    function mint(address to, uint256 amount) external {
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function transfer(address, uint256) external pure returns (bool) {
        return false;
    }
}
