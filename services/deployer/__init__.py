"""fnbus deployer service."""
