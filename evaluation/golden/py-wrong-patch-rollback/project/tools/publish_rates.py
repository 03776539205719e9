print('published rates to the staging cache')
