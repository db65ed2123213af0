from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="lambda-fsm",
    version="0.1.0",
    description="Durable finite-state-machine workflows on AWS Lambda",
    long_description=Path(__file__).with_name("README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    python_requires=">=3.11",
    packages=find_packages(include=["fsm", "fsm.*", "actions", "sources", "config", "aws_lambda_fsm"]),
    package_data={"fsm": ["py.typed", "app/ui/static/*"]},
    install_requires=["PyYAML>=6", "orjson>=3.9"],
    extras_require={
        "aws": ["boto3>=1.34"],
        "redis": ["redis>=5"],
        "memcache": ["pymemcache>=4"],
        "all": ["boto3>=1.34", "redis>=5", "pymemcache>=4"],
        "cost": ["boto3>=1.34", "moto>=5"],  # `fsm cost` plays the AWS services in-process
        "test": ["boto3>=1.34", "redis>=5", "pymemcache>=4", "pytest>=8", "pytest-xdist>=3", "moto[server]>=5", "cfn-lint>=1",
                 "aws-sam-translator>=1.80", "selenium>=4",
                 "fakeredis[lua]>=2.20"],
    },
    entry_points={"console_scripts": ["fsm = fsm.cli:main"]},
)
