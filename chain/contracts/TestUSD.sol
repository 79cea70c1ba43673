// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title A USD stablecoin for tests and the embedded network (the ledger's asset `USD`).
/// @notice An ERC-20 with 6 decimals, like the USD stablecoins on public chains, and EIP-2612
/// permit. It is backed by nothing: holders of MINTER_ROLE mint at will. A production
/// deployment allows a real stablecoin in the Vault instead.
contract TestUSD is ERC20Permit, AccessControl {
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");

    constructor(address admin) ERC20("BlackTail Test USD", "tUSD") ERC20Permit("BlackTail Test USD") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Mints `amount` base units (10^-6 USD) to `to`.
    function mint(address to, uint256 amount) external onlyRole(MINTER_ROLE) {
        _mint(to, amount);
    }
}
