// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @title The Vault: holds the tokens that back BlackTail's ledger.
/// @notice Every deposit emits one `Deposited` event naming the ledger account it credits;
/// the chain watcher turns each such log into exactly one ledger credit. Funds leave only
/// through the SettlementDistributor, which the Vault approves for an unlimited allowance of
/// every token it has ever allowed: a claim then costs one `transferFrom` on the token, with
/// no call into the Vault (see specs/contracts.md, "Payouts").
contract Vault is AccessControl, Pausable {
    using SafeERC20 for IERC20;

    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    /// @notice At most this many distinct tokens are ever allowed, which bounds the loop in
    /// `setDistributor`.
    uint256 public constant TOKENS_MAX = 16;

    enum TokenStatus {
        Unknown,
        Allowed,
        Disallowed
    }

    /// @notice The SettlementDistributor that claims pay out through (zero until set).
    address public distributor;

    /// @notice Whether deposits of a token are accepted; a disallowed token that was once
    /// allowed stays known, so the funds already deposited in it can still be claimed.
    mapping(address token => TokenStatus) public tokenStatus;

    address[] private _tokens;

    /// @notice One deposit of `amount` of `token` by `depositor`, credited to the ledger
    /// account `account`.
    event Deposited(address indexed account, address indexed token, address indexed depositor, uint256 amount);
    event TokenAllowed(address indexed token, bool allowed);
    event DistributorSet(address indexed previous, address indexed distributor);

    error ZeroAmount();
    error ZeroAccount();
    error ZeroAddress();
    error TokenNotAllowed(address token);
    error TooManyTokens(uint256 tokensMax);

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Moves `amount` of `token` from the caller into the Vault, credited to `account`.
    function deposit(address token, uint256 amount, address account) external whenNotPaused {
        _checkDeposit(token, amount, account);
        _deposit(token, amount, account);
    }

    /// @notice `deposit` with an EIP-2612 permit signed by the caller for this Vault, so one
    /// transaction both approves and deposits.
    /// @dev A permit that fails is tolerated when the allowance is already enough (someone
    /// may have submitted the same signed permit first, which would otherwise grief the
    /// deposit); otherwise the token's own error (expired, wrong signer) is re-raised.
    function depositWithPermit(
        address token,
        uint256 amount,
        address account,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external whenNotPaused {
        _checkDeposit(token, amount, account);
        try IERC20Permit(token).permit(msg.sender, address(this), amount, deadline, v, r, s) {}
        catch (bytes memory reason) {
            if (IERC20(token).allowance(msg.sender, address(this)) < amount) {
                assembly ("memory-safe") {
                    revert(add(reason, 0x20), mload(reason))
                }
            }
        }
        _deposit(token, amount, account);
    }

    /// @notice Allows or disallows deposits of `token`. Allowing a token for the first time
    /// also approves the distributor (when set) to pay it out.
    function setTokenAllowed(address token, bool allowed) external onlyRole(DEFAULT_ADMIN_ROLE) {
        TokenStatus status = tokenStatus[token];
        if (status == TokenStatus.Unknown) {
            if (!allowed) revert TokenNotAllowed(token);
            if (_tokens.length == TOKENS_MAX) revert TooManyTokens(TOKENS_MAX);
            _tokens.push(token);
            if (distributor != address(0)) IERC20(token).forceApprove(distributor, type(uint256).max);
        }
        tokenStatus[token] = allowed ? TokenStatus.Allowed : TokenStatus.Disallowed;
        emit TokenAllowed(token, allowed);
    }

    /// @notice Makes `newDistributor` the only spender of the Vault's tokens: the previous
    /// distributor's allowances are revoked, the new one gets an unlimited allowance of
    /// every known token.
    function setDistributor(address newDistributor) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newDistributor == address(0)) revert ZeroAddress();
        address previous = distributor;
        distributor = newDistributor;
        uint256 count = _tokens.length;
        for (uint256 i = 0; i < count; ++i) {
            IERC20 token = IERC20(_tokens[i]);
            if (previous != address(0)) token.forceApprove(previous, 0);
            token.forceApprove(newDistributor, type(uint256).max);
        }
        emit DistributorSet(previous, newDistributor);
    }

    /// @notice Every token ever allowed, in the order they were first allowed.
    function tokens() external view returns (address[] memory) {
        return _tokens;
    }

    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    function _checkDeposit(address token, uint256 amount, address account) private view {
        if (amount == 0) revert ZeroAmount();
        if (account == address(0)) revert ZeroAccount();
        if (tokenStatus[token] != TokenStatus.Allowed) revert TokenNotAllowed(token);
    }

    function _deposit(address token, uint256 amount, address account) private {
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        emit Deposited(account, token, msg.sender, amount);
    }
}
