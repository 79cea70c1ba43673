// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @title Epoch settlement: one Merkle root per epoch pays every account.
/// @notice Each epoch the operator posts the root of a tree (OpenZeppelin StandardMerkleTree,
/// leaves `(address account, address token, uint256 cumulativeAmount)`) of every account's
/// cumulative withdrawable amount per token, together with the head (size, root) of the
/// ledger's event log. Anyone may claim for an account against the current epoch: the
/// account receives `cumulativeAmount - claimed[account][token]`, paid from the Vault.
contract SettlementDistributor is AccessControl, Pausable {
    using SafeERC20 for IERC20;

    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    // Declared first so that they share one storage slot with Pausable's `_paused`: a claim
    // reads the pause flag and the epoch with a single cold SLOAD, and a root post rewrites
    // epoch and log size with a single SSTORE. Only the current epoch is kept in storage
    // (overwritten each epoch, nonzero to nonzero, which is cheap); history is in the events.
    uint64 public epoch;
    uint64 public logSize;
    bytes32 public root;
    bytes32 public logRoot;

    /// @notice The Vault that holds the funds; it approves this contract as its spender.
    address public immutable vault;

    /// @notice The cumulative amount already paid out per account and token.
    mapping(address account => mapping(address token => uint256)) public claimed;

    event RootPosted(uint64 indexed epoch, bytes32 root, uint64 logSize, bytes32 logRoot);
    event Claimed(
        address indexed account, address indexed token, uint64 indexed epoch, uint256 amount, uint256 cumulativeAmount
    );

    error WrongEpoch(uint64 expected, uint64 given);
    error LogSizeDecreased(uint64 current, uint64 given);
    error LogRootChanged(uint64 logSize, bytes32 current, bytes32 given);
    error InvalidProof();
    error NothingToClaim(address account, address token, uint256 claimed);
    error ZeroAddress();

    constructor(address admin, address vault_) {
        if (vault_ == address(0)) revert ZeroAddress();
        vault = vault_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Posts epoch `newEpoch` (exactly one more than the current one): the root of
    /// every account's cumulative withdrawable amounts and the event log's tree head. The log
    /// never shrinks, and a head of the same size must have the same root. Posting is allowed
    /// while paused, so that a bad root can be replaced before claims resume.
    function postRoot(uint64 newEpoch, bytes32 newRoot, uint64 newLogSize, bytes32 newLogRoot)
        external
        onlyRole(OPERATOR_ROLE)
    {
        uint64 currentEpoch = epoch;
        if (newEpoch != currentEpoch + 1) revert WrongEpoch(currentEpoch + 1, newEpoch);
        uint64 currentLogSize = logSize;
        if (newLogSize < currentLogSize) revert LogSizeDecreased(currentLogSize, newLogSize);
        if (newLogSize == currentLogSize && newLogRoot != logRoot) {
            revert LogRootChanged(currentLogSize, logRoot, newLogRoot);
        }
        epoch = newEpoch;
        logSize = newLogSize;
        root = newRoot;
        logRoot = newLogRoot;
        emit RootPosted(newEpoch, newRoot, newLogSize, newLogRoot);
    }

    /// @notice Pays `account` what it has not yet claimed of `cumulativeAmount` of `token`,
    /// proven against the root of the current epoch `atEpoch`. Anyone may submit the claim;
    /// the tokens always go to `account`.
    function claim(
        uint64 atEpoch,
        address account,
        address token,
        uint256 cumulativeAmount,
        bytes32[] calldata proof
    ) external whenNotPaused returns (uint256 amount) {
        uint64 currentEpoch = epoch;
        if (atEpoch != currentEpoch) revert WrongEpoch(currentEpoch, atEpoch);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(account, token, cumulativeAmount))));
        if (!MerkleProof.verifyCalldata(proof, root, leaf)) revert InvalidProof();
        uint256 already = claimed[account][token];
        if (cumulativeAmount <= already) revert NothingToClaim(account, token, already);
        amount = cumulativeAmount - already;
        claimed[account][token] = cumulativeAmount;
        emit Claimed(account, token, currentEpoch, amount, cumulativeAmount);
        IERC20(token).safeTransferFrom(vault, account, amount);
    }

    /// @notice The current epoch, its root and the log head, in one call.
    function current() external view returns (uint64, bytes32, uint64, bytes32) {
        return (epoch, root, logSize, logRoot);
    }

    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }
}
