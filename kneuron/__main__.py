from kneuron.cli import run

run()
